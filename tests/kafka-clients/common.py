"""Settings shared by the scripts: where the node is and how to authenticate to it.

Every script takes its settings as one JSON object in argv[1] and prints one JSON object
(or JSON lines, for long-running members) on stdout, so the Rust tests can assert on them.
"""
import json
import sys


def args():
    return json.loads(sys.argv[1])


def confluent_security(a):
    """librdkafka properties for the node's listener: TLS with a client certificate, or none."""
    if a.get("plaintext"):
        return {"security.protocol": "PLAINTEXT"}
    conf = {"security.protocol": "SSL", "ssl.ca.location": a["ca"]}
    if a.get("cert"):
        conf["ssl.certificate.location"] = a["cert"]
        conf["ssl.key.location"] = a["key"]
    return conf


def emit(obj):
    print(json.dumps(obj), flush=True)
