"""confluent-kafka (librdkafka): find offsets by timestamp (offsets_for_times, ListOffsets)
and read the first record from each.

Settings: bootstrap, ca/cert/key, topic, partitions, timestamp_ms.
Prints {"offsets": {partition: offset}, "first": {partition: [offset, value, timestamp]}}.
"""
from confluent_kafka import Consumer, TopicPartition

from common import args, confluent_security, emit


def main():
    a = args()
    c = Consumer({"bootstrap.servers": a["bootstrap"], "group.id": "seeker",
                  "enable.auto.commit": False, **confluent_security(a)})
    wanted = [TopicPartition(a["topic"], p, a["timestamp_ms"]) for p in range(a["partitions"])]
    found = c.offsets_for_times(wanted, timeout=15)
    offsets = {str(tp.partition): tp.offset for tp in found}
    c.assign([tp for tp in found if tp.offset >= 0])
    first = {}
    idle = 0
    while len(first) < sum(1 for tp in found if tp.offset >= 0) and idle < 30:
        msg = c.poll(0.2)
        if msg is None:
            idle += 1
            continue
        if msg.error():
            raise SystemExit(str(msg.error()))
        first.setdefault(str(msg.partition()), [msg.offset(), msg.value().decode(), msg.timestamp()[1]])
    c.close()
    emit({"offsets": offsets, "first": first})


main()
