"""confluent-kafka (librdkafka): read a topic, either as a member of a group (from its
committed offsets, committing what it read) or without a group from the beginning; stops once
`idle_s` pass without a record (or after `max` records).

Settings: bootstrap, ca/cert/key, topic, group (optional), max (optional), idle_s.
Prints {"records": [[partition, offset, key, value]...], "error": null or text}.
"""
from confluent_kafka import Consumer, KafkaException, TopicPartition

from common import args, confluent_security, emit


def text(b):
    return None if b is None else b.decode()


def main():
    a = args()
    group = a.get("group")
    consumer = Consumer({
        "bootstrap.servers": a["bootstrap"],
        "group.id": group or "strait-test-reader",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        **confluent_security(a),
    })
    if group:
        consumer.subscribe([a["topic"]])
    else:
        meta = consumer.list_topics(a["topic"], timeout=10)
        err = meta.topics[a["topic"]].error
        if err is not None:
            emit({"records": [], "error": str(err)})
            return
        parts = sorted(meta.topics[a["topic"]].partitions)
        consumer.assign([TopicPartition(a["topic"], p, 0) for p in parts])
    records = []
    idle = 0.0
    limit = a.get("max")
    error = None
    while idle < a.get("idle_s", 3) and (limit is None or len(records) < limit):
        msg = consumer.poll(0.2)
        if msg is None:
            idle += 0.2
            continue
        if msg.error():
            error = str(msg.error())
            break
        idle = 0.0
        records.append([msg.partition(), msg.offset(), text(msg.key()), text(msg.value())])
    if group and records:
        consumer.commit(asynchronous=False)
    consumer.close()
    emit({"records": records, "error": error})


main()
