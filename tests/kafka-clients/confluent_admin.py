"""confluent-kafka's AdminClient against the node: create topics (with settings), describe and
alter their settings, add partitions, describe the cluster, list and describe groups, delete a
topic. Each step's outcome is reported; a step that fails reports its error.

Settings: bootstrap, ca/cert/key, topic, group.
Prints {"created", "configs", "altered", "partitions", "cluster", "groups", "group", "deleted",
"topics_after"}.
"""
from confluent_kafka import KafkaException
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                  NewPartitions, NewTopic)

from common import args, confluent_security, emit


def outcome(futures):
    out = {}
    for k, f in futures.items():
        try:
            f.result(15)
            out[str(k)] = "ok"
        except KafkaException as e:
            out[str(k)] = str(e.args[0])
    return out


def main():
    a = args()
    admin = AdminClient({"bootstrap.servers": a["bootstrap"], **confluent_security(a)})
    t = a["topic"]
    result = {}
    result["created"] = outcome(admin.create_topics([
        NewTopic(t, num_partitions=2, replication_factor=1,
                 config={"cleanup.policy": "compact", "retention.ms": "3600000"}),
        NewTopic(t + "-bad", num_partitions=1, replication_factor=1, config={"no.such.setting": "1"}),
        NewTopic(t + "-rf3", num_partitions=1, replication_factor=3),
    ]))
    result["again"] = outcome(admin.create_topics([NewTopic(t, num_partitions=2, replication_factor=1)]))
    res = ConfigResource(ConfigResource.Type.TOPIC, t)
    described = admin.describe_configs([res])[res].result(15)
    result["configs"] = {k: v.value for k, v in described.items()}
    altered = admin.incremental_alter_configs([ConfigResource(
        ConfigResource.Type.TOPIC, t,
        incremental_configs=[ConfigEntry("retention.ms", "7200000",
                                         incremental_operation=AlterConfigOpType.SET)])])
    result["altered"] = outcome(altered)
    described = admin.describe_configs([res])[res].result(15)
    result["retention_after"] = described["retention.ms"].value
    result["partitions"] = outcome(admin.create_partitions([NewPartitions(t, 4)]))
    meta = admin.list_topics(t, timeout=10)
    result["partition_count"] = len(meta.topics[t].partitions)
    cluster = admin.describe_cluster().result(15)
    result["cluster"] = {"id": cluster.cluster_id, "nodes": [n.id for n in cluster.nodes],
                         "controller": cluster.controller.id}
    listed = admin.list_consumer_groups().result(15)
    result["groups"] = sorted(g.group_id for g in listed.valid)
    if a.get("group"):
        g = admin.describe_consumer_groups([a["group"]])[a["group"]].result(15)
        result["group"] = {"state": str(g.state), "protocol": g.partition_assignor,
                           "members": len(g.members)}
    result["deleted"] = outcome(admin.delete_topics([t]))
    result["topics_after"] = sorted(admin.list_topics(timeout=10).topics)
    emit(result)


main()
