"""confluent-kafka (librdkafka): produce the given keyed records (a null value is a
tombstone) to partition 0, in order.

Settings: bootstrap, ca/cert/key, topic, records: [[key, value or null]...].
Prints {"offsets": [...]}.
"""
from confluent_kafka import Producer

from common import args, confluent_security, emit


def main():
    a = args()
    producer = Producer({"bootstrap.servers": a["bootstrap"], "enable.idempotence": True,
                         **confluent_security(a)})
    offsets = []
    errors = []

    def done(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            offsets.append(msg.offset())

    for key, value in a["records"]:
        producer.produce(a["topic"], key=key.encode(),
                         value=None if value is None else value.encode(),
                         partition=0, on_delivery=done)
    left = producer.flush(30)
    if errors or left:
        raise SystemExit(f"produce failed: {errors} ({left} undelivered)")
    emit({"offsets": offsets})


main()
