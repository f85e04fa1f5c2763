"""confluent-kafka (librdkafka): try to start a transactional producer; Strait has no
transactions, so this must fail at once with a clear reason.

Settings: bootstrap, ca/cert/key.
Prints {"error": text, "fatal": bool} (or {"error": null} if it started).
"""
from confluent_kafka import KafkaException, Producer

from common import args, confluent_security, emit


def main():
    a = args()
    p = Producer({"bootstrap.servers": a["bootstrap"], "transactional.id": "tx-1",
                  **confluent_security(a)})
    try:
        p.init_transactions(20)
        emit({"error": None})
    except KafkaException as e:
        emit({"error": e.args[0].str(), "fatal": e.args[0].fatal()})


main()
