"""confluent-kafka (librdkafka): produce keyed records with headers, a null key and a
tombstone with every codec, then read them back from the beginning.

Settings: bootstrap, ca/cert/key (or plaintext), topic_prefix, codecs, count.
Prints {"codec": [{"offset", "partition", "key", "value", "headers", "timestamp"}...]}.
"""
from confluent_kafka import Consumer, Producer, TopicPartition, KafkaException

from common import args, confluent_security, emit


def text(b):
    return None if b is None else b.decode()


def main():
    a = args()
    out = {}
    for codec in a["codecs"]:
        topic = f'{a["topic_prefix"]}-{codec}'
        producer = Producer({
            "bootstrap.servers": a["bootstrap"],
            "compression.type": codec,
            "linger.ms": 5,
            "enable.idempotence": True,
            **confluent_security(a),
        })
        errors = []

        def delivered(err, msg):
            if err is not None:
                errors.append(str(err))

        for i in range(a["count"]):
            producer.produce(
                topic,
                key=f"key-{i % 7}".encode(),
                value=f"{codec}-value-{i}".encode() * (1 + i % 3),
                headers=[("h1", f"v{i}".encode()), ("h2", None)],
                partition=0,
                on_delivery=delivered,
            )
        producer.produce(topic, key=None, value=b"no key", partition=0, on_delivery=delivered)
        producer.produce(topic, key=b"key-0", value=None, partition=0, on_delivery=delivered)
        left = producer.flush(30)
        if errors or left:
            raise SystemExit(f"produce failed: {errors} ({left} undelivered)")
        consumer = Consumer({
            "bootstrap.servers": a["bootstrap"],
            "group.id": f"reader-{topic}",
            "enable.auto.commit": False,
            **confluent_security(a),
        })
        consumer.assign([TopicPartition(topic, 0, 0)])
        want = a["count"] + 2
        got = []
        idle = 0
        while len(got) < want and idle < 40:
            msg = consumer.poll(0.5)
            if msg is None:
                idle += 1
                continue
            if msg.error():
                raise KafkaException(msg.error())
            got.append({
                "offset": msg.offset(),
                "partition": msg.partition(),
                "key": text(msg.key()),
                "value": text(msg.value()),
                "headers": [[k, text(v)] for k, v in (msg.headers() or [])],
                "timestamp": msg.timestamp()[1],
            })
        consumer.close()
        out[codec] = got
    emit(out)


main()
