"""kafka-python: produce keyed records with headers (gzip), read them back in a consumer group
that commits, and report the committed offset the node returns.

Settings: bootstrap, ca/cert/key, topic, group, count.
Prints {"records": [{"offset", "key", "value", "headers"}...], "committed": N}.
"""
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from common import args, emit


def security(a):
    return {
        "security_protocol": "SSL",
        "ssl_cafile": a["ca"],
        "ssl_certfile": a["cert"],
        "ssl_keyfile": a["key"],
    }


def text(b):
    return None if b is None else b.decode()


def main():
    a = args()
    producer = KafkaProducer(bootstrap_servers=a["bootstrap"], compression_type="gzip", acks="all", **security(a))
    for i in range(a["count"]):
        producer.send(a["topic"], key=f"k{i}".encode(), value=f"v{i}".encode(),
                      headers=[("n", str(i).encode())], partition=0).get(timeout=30)
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(
        bootstrap_servers=a["bootstrap"],
        group_id=a["group"],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=15000,
        **security(a),
    )
    consumer.subscribe([a["topic"]])
    records = []
    for msg in consumer:
        records.append({
            "offset": msg.offset,
            "key": text(msg.key),
            "value": text(msg.value),
            "headers": [[k, text(v)] for k, v in msg.headers],
        })
        if len(records) == a["count"]:
            break
    tp = TopicPartition(a["topic"], 0)
    consumer.commit({tp: OffsetAndMetadata(records[-1]["offset"] + 1, "done", -1)})
    committed = consumer.committed(tp)
    consumer.close()
    emit({"records": records, "committed": committed})


main()
