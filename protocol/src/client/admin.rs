//! Topic administration and offset lookups.

use std::sync::Arc;

use super::conn::{unexpected, Client, ClientError};
use crate::acl::{AclListing, AclRule};
use crate::message::{
    ClusterDescription, Metadata, OffsetSpec, Request, Response, TopicDescription, VERSION_CLUSTER,
};

/// Administrative calls against a cluster.
#[derive(Clone)]
pub struct Admin {
    client: Arc<Client>,
}

impl Admin {
    pub fn new(client: Arc<Client>) -> Self {
        Admin { client }
    }

    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        configs: Vec<(String, String)>,
    ) -> Result<(), ClientError> {
        let req = Request::CreateTopic {
            name: name.into(),
            partitions,
            configs,
        };
        match self.client.call(&req, &[]).await?.0 {
            Response::TopicCreated { .. } => Ok(()),
            other => Err(unexpected("create_topic", other)),
        }
    }

    /// Grows a topic to `partitions` partitions.
    pub async fn add_partitions(&self, name: &str, partitions: u32) -> Result<(), ClientError> {
        let req = Request::AddPartitions {
            name: name.into(),
            partitions,
        };
        match self.client.call(&req, &[]).await?.0 {
            Response::TopicCreated { .. } => Ok(()),
            other => Err(unexpected("add_partitions", other)),
        }
    }

    /// Commits offsets for a group that has no members on this cluster (operator tools and
    /// failover): refused with an error while the group has members here.
    pub async fn commit_group_offsets(
        &self,
        group: &str,
        offsets: &std::collections::BTreeMap<(String, u32), u64>,
        metadata: &str,
    ) -> Result<(), ClientError> {
        let req = Request::CommitOffsets {
            group: group.into(),
            member_id: String::new(),
            generation: -1,
            offsets: offsets
                .iter()
                .map(
                    |((topic, partition), offset)| crate::message::CommittedOffset {
                        topic: topic.clone(),
                        partition: *partition,
                        offset: *offset,
                        metadata: metadata.into(),
                    },
                )
                .collect(),
        };
        self.client.call(&req, &[]).await.map(|_| ())
    }

    /// Changes the named settings of a topic; the others keep their values.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        configs: Vec<(String, String)>,
    ) -> Result<TopicDescription, ClientError> {
        let req = Request::AlterTopicConfig {
            name: name.into(),
            configs,
        };
        match self.client.call(&req, &[]).await?.0 {
            Response::TopicDescription(d) => Ok(d),
            other => Err(unexpected("alter_topic_config", other)),
        }
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        match self
            .client
            .call(&Request::DeleteTopic { name: name.into() }, &[])
            .await?
            .0
        {
            Response::TopicDeleted { .. } => Ok(()),
            other => Err(unexpected("delete_topic", other)),
        }
    }

    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        match self
            .client
            .call(&Request::DescribeTopic { name: name.into() }, &[])
            .await?
            .0
        {
            Response::TopicDescription(d) => Ok(d),
            other => Err(unexpected("describe_topic", other)),
        }
    }

    /// Cluster metadata for the named topics, or for all when `topics` is None.
    pub async fn metadata(&self, topics: Option<Vec<String>>) -> Result<Metadata, ClientError> {
        match self
            .client
            .call(&Request::Metadata { topics }, &[])
            .await?
            .0
        {
            Response::Metadata(m) => Ok(m),
            other => Err(unexpected("metadata", other)),
        }
    }

    /// The offset a spec names, with its timestamp when asked by time; `None` for a timestamp
    /// later than every record.
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<(u64, Option<i64>), ClientError> {
        let req = Request::ListOffsets {
            topic: topic.into(),
            partition,
            spec,
        };
        match self.client.call(&req, &[]).await?.0 {
            Response::Offsets {
                offset,
                timestamp_ms,
            } => Ok((offset, timestamp_ms)),
            other => Err(unexpected("list_offsets", other)),
        }
    }

    /// The cluster as the node's controller sees it: voters, controller leader, nodes (needs
    /// `describe` on the cluster when authorization is on).
    pub async fn describe_cluster(&self) -> Result<ClusterDescription, ClientError> {
        let conn = self.client.connection().await?;
        if conn.hello.version < VERSION_CLUSTER {
            return Err(ClientError::Invalid(format!(
                "the node at {} speaks protocol version {}, which has no cluster description (version {VERSION_CLUSTER}); upgrade it",
                conn.address, conn.hello.version
            )));
        }
        match self.client.call(&Request::DescribeCluster {}, &[]).await?.0 {
            Response::Cluster(c) => Ok(c),
            other => Err(unexpected("describe_cluster", other)),
        }
    }

    /// The node's ACLs (needs `describe` on the cluster when authorization is on).
    pub async fn list_acls(&self) -> Result<AclListing, ClientError> {
        match self.client.call(&Request::ListAcls {}, &[]).await?.0 {
            Response::Acls(l) => Ok(l),
            other => Err(unexpected("list_acls", other)),
        }
    }

    /// Adds and persists a rule (needs `alter` on the cluster); answers the new listing.
    pub async fn add_acl(&self, rule: AclRule) -> Result<AclListing, ClientError> {
        match self.client.call(&Request::AddAcl { rule }, &[]).await?.0 {
            Response::Acls(l) => Ok(l),
            other => Err(unexpected("add_acl", other)),
        }
    }

    /// Removes a rule added at run time; answers the new listing.
    pub async fn remove_acl(&self, rule: AclRule) -> Result<AclListing, ClientError> {
        match self.client.call(&Request::RemoveAcl { rule }, &[]).await?.0 {
            Response::Acls(l) => Ok(l),
            other => Err(unexpected("remove_acl", other)),
        }
    }
}
