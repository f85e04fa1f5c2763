"""confluent-kafka (librdkafka): produce `count` records round-robin over `partitions`
partitions, values "<prefix>-<i>", with an idempotent producer.

Settings: bootstrap, ca/cert/key, topic, partitions, count, prefix, timestamp_ms (optional),
conf (more librdkafka properties, optional).
Prints {"delivered": [[partition, offset, value]...]}.
"""
from confluent_kafka import Producer

from common import args, confluent_security, emit


def main():
    a = args()
    producer = Producer({
        "bootstrap.servers": a["bootstrap"],
        "enable.idempotence": True,
        "linger.ms": 2,
        **confluent_security(a),
        **a.get("conf", {}),
    })
    delivered = []
    errors = []

    def done(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            delivered.append([msg.partition(), msg.offset(), msg.value().decode()])

    for i in range(a["count"]):
        extra = {"timestamp": a["timestamp_ms"] + i} if "timestamp_ms" in a else {}
        while True:
            try:
                producer.produce(a["topic"], value=f'{a["prefix"]}-{i}'.encode(),
                                 partition=i % a["partitions"], on_delivery=done, **extra)
                break
            except BufferError:
                # The local queue is full: let deliveries drain it.
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(60)
    if errors or left:
        raise SystemExit(f"produce failed: {errors[:5]} ({left} undelivered)")
    emit({"delivered": delivered})


main()
