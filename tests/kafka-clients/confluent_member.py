"""confluent-kafka (librdkafka): one member of a consumer group, until SIGTERM (then it
commits and leaves the group cleanly).

Settings: bootstrap, ca/cert/key, topic, group, strategy (range, roundrobin,
cooperative-sticky), name.
Prints JSON lines: {"assignment": [[topic, partition]...]} after every rebalance, and on exit
{"records": [[partition, offset, value]...]}.
"""
import signal

from confluent_kafka import Consumer, KafkaError, KafkaException

from common import args, confluent_security, emit

stop = False


def on_term(_sig, _frame):
    global stop
    stop = True


def main():
    a = args()
    signal.signal(signal.SIGTERM, on_term)
    consumer = Consumer({
        "bootstrap.servers": a["bootstrap"],
        "group.id": a["group"],
        "client.id": a.get("name", "member"),
        "partition.assignment.strategy": a["strategy"],
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 200,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 300,
        **confluent_security(a),
    })

    cooperative = a["strategy"] == "cooperative-sticky"
    owned = set()

    # The callbacks run before librdkafka applies the change, so the set is kept here: an eager
    # rebalance hands out the whole assignment, a cooperative one only what is added or taken.
    def assigned(_c, partitions):
        if not cooperative:
            owned.clear()
        owned.update((t.topic, t.partition) for t in partitions)
        emit({"assignment": sorted(list(tp) for tp in owned)})

    def revoked(_c, partitions):
        if cooperative:
            owned.difference_update((t.topic, t.partition) for t in partitions)
        else:
            owned.clear()
        emit({"assignment": sorted(list(tp) for tp in owned)})

    consumer.subscribe([a["topic"]], on_assign=assigned, on_revoke=revoked, on_lost=revoked)
    records = []
    while not stop:
        msg = consumer.poll(0.1)
        if msg is None:
            continue
        if msg.error():
            raise KafkaException(msg.error())
        records.append([msg.partition(), msg.offset(), msg.value().decode()])
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as e:
        # Nothing new since the last automatic commit.
        if e.args[0].code() != KafkaError._NO_OFFSET:
            raise
    consumer.close()
    emit({"records": records})


main()
