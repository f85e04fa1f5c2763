//! Metadata and topic administration for Kafka clients and admin tools: Metadata (with
//! auto-creation when the node allows it), CreateTopics, DeleteTopics, CreatePartitions,
//! DescribeConfigs, IncrementalAlterConfigs, DescribeCluster and FindCoordinator. This node
//! is the whole cluster as Kafka sees it: the only broker, the controller and every
//! coordinator.

use bytes::Bytes;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use strait_protocol::acl::{Operation, ResourceKind};
use strait_protocol::kafka::kafka_protocol;
use strait_protocol::{ErrorCode, Request, Response, WireError};

use super::dispatch::Ctx;
use super::errors::{self, About};
use super::str_bytes;

/// Kafka's config resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// The advertised address as Kafka's host and port.
fn host_port(ctx: &Ctx<'_>) -> (String, i32) {
    let a = &ctx.config.advertised;
    match a.rsplit_once(':') {
        Some((host, port)) => (
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port.parse().unwrap_or(9092),
        ),
        None => (a.clone(), 9092),
    }
}

fn node_id(ctx: &Ctx<'_>) -> i32 {
    ctx.service.broker().node_id.0 as i32
}

/// Creates `topic` with the node's defaults if Kafka-style auto-creation is on and the
/// principal may create it; answers whether it now exists.
pub(super) async fn auto_create(ctx: &Ctx<'_>, topic: &str) -> Result<bool, WireError> {
    if !ctx.config.auto_create_topics {
        return Ok(false);
    }
    let request = Request::CreateTopic {
        name: topic.to_string(),
        partitions: ctx.config.auto_create_partitions,
        configs: Vec::new(),
    };
    match ctx.service.handle(ctx.session, request, Bytes::new()).await {
        Ok(_) => {
            tracing::info!(topic, principal = %ctx.session.principal(), "topic auto-created for a Kafka client");
            Ok(true)
        }
        Err(e) if e.code == ErrorCode::TOPIC_EXISTS => Ok(true),
        Err(e) => Err(e),
    }
}

pub(super) async fn metadata(ctx: &Ctx<'_>, request: MetadataRequest) -> MetadataResponse {
    let v = ctx.version();
    let named: Option<Vec<String>> = request.topics.map(|ts| {
        ts.into_iter()
            .filter_map(|t| t.name.map(|n| n.0.as_str().to_string()))
            .collect()
    });
    // Before v4 a request could not say no; since, it says per request.
    let may_create = v < 4 || request.allow_auto_topic_creation;
    let mut errors: Vec<(String, WireError)> = Vec::new();
    if let Some(names) = &named {
        let broker = ctx.service.broker();
        for name in names {
            if broker.topic(name).is_ok() {
                continue;
            }
            if !ctx
                .service
                .may(ctx.session, Operation::Describe, ResourceKind::Topic, name)
            {
                continue;
            }
            if may_create {
                if let Err(e) = auto_create(ctx, name).await {
                    errors.push((name.clone(), e));
                }
            }
        }
    }
    let listing = ctx
        .service
        .handle(
            ctx.session,
            Request::Metadata {
                topics: named.clone(),
            },
            Bytes::new(),
        )
        .await;
    let (host, port) = host_port(ctx);
    let id = node_id(ctx);
    let broker = ctx.service.broker();
    let mut answer = MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(id.into())
            .with_host(str_bytes(host))
            .with_port(port)])
        .with_cluster_id((v >= 2).then(|| str_bytes(broker.cluster.clone())))
        .with_controller_id(id.into());
    let listed = match listing {
        Ok((Response::Metadata(m), _)) => m.topics,
        _ => Vec::new(),
    };
    for t in &listed {
        let partitions = t
            .partitions
            .iter()
            .map(|p| {
                MetadataResponsePartition::default()
                    .with_partition_index(p.id as i32)
                    .with_leader_id((p.leader as i32).into())
                    .with_leader_epoch(if v >= 7 { p.leader_epoch as i32 } else { -1 })
                    .with_replica_nodes(p.replicas.iter().map(|r| (*r as i32).into()).collect())
                    .with_isr_nodes(p.in_sync.iter().map(|r| (*r as i32).into()).collect())
            })
            .collect();
        answer.topics.push(
            MetadataResponseTopic::default()
                .with_name(Some(str_bytes(t.name.clone()).into()))
                .with_is_internal(t.name.starts_with("__"))
                .with_partitions(partitions),
        );
    }
    // Topics asked for by name that are not in the listing: unknown, refused, or failed.
    for name in named.unwrap_or_default() {
        if listed.iter().any(|t| t.name == name) {
            continue;
        }
        let code = if let Some((_, e)) = errors.iter().find(|(n, _)| *n == name) {
            errors::code(e, About::Topic)
        } else if !ctx
            .service
            .may(ctx.session, Operation::Describe, ResourceKind::Topic, &name)
        {
            ResponseError::TopicAuthorizationFailed.code()
        } else {
            ResponseError::UnknownTopicOrPartition.code()
        };
        answer.topics.push(
            MetadataResponseTopic::default()
                .with_name(Some(str_bytes(name).into()))
                .with_error_code(code),
        );
    }
    answer
}

pub(super) async fn create_topics(
    ctx: &Ctx<'_>,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        let name = t.name.0.as_str().to_string();
        let partitions = if t.num_partitions < 0 {
            ctx.config.auto_create_partitions
        } else {
            t.num_partitions as u32
        };
        let mut result = CreatableTopicResult::default().with_name(t.name.clone());
        if ctx.version() >= 5 {
            result.num_partitions = partitions as i32;
            result.replication_factor = 1;
        }
        let configs: Vec<(String, String)> = t
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.as_str().to_string(), v.as_str().to_string()))
            })
            .collect();
        let outcome = if t.replication_factor > 1 {
            Err(WireError::new(
                ErrorCode::INVALID_REQUEST,
                format!(
                    "replication factor {} is larger than the cluster's 1 node",
                    t.replication_factor
                ),
            ))
        } else if !t.assignments.is_empty() {
            Err(WireError::new(
                ErrorCode::INVALID_REQUEST,
                "manual replica assignments are not supported; give a partition count",
            ))
        } else if partitions == 0 {
            Err(WireError::new(
                ErrorCode::INVALID_REQUEST,
                "a topic needs at least one partition",
            ))
        } else if request.validate_only {
            validate_create(ctx, &name, &configs)
        } else {
            ctx.service
                .handle(
                    ctx.session,
                    Request::CreateTopic {
                        name: name.clone(),
                        partitions,
                        configs,
                    },
                    Bytes::new(),
                )
                .await
                .map(drop)
        };
        if let Err(e) = outcome {
            result.error_code = if t.replication_factor > 1 {
                ResponseError::InvalidReplicationFactor.code()
            } else if t.num_partitions == 0 {
                ResponseError::InvalidPartitions.code()
            } else if !t.assignments.is_empty() {
                ResponseError::InvalidReplicaAssignment.code()
            } else {
                errors::code(&e, About::Topic)
            };
            result.error_message = Some(str_bytes(e.message));
        }
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// What a create would say, without creating.
fn validate_create(
    ctx: &Ctx<'_>,
    name: &str,
    configs: &[(String, String)],
) -> Result<(), WireError> {
    ctx.service
        .check(ctx.session, Operation::Create, ResourceKind::Topic, name)?;
    if ctx.service.broker().topic(name).is_ok() {
        return Err(WireError::new(
            ErrorCode::TOPIC_EXISTS,
            format!("topic {name:?} already exists"),
        ));
    }
    let mut config = crate::storage::config::LogConfig::default();
    for (k, v) in configs {
        config
            .set(k, v)
            .map_err(|e| WireError::new(ErrorCode::INVALID_CONFIG, e.to_string()))?;
    }
    Ok(())
}

pub(super) async fn delete_topics(
    ctx: &Ctx<'_>,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let names: Vec<TopicName> = if ctx.version() >= 6 {
        request.topics.into_iter().filter_map(|t| t.name).collect()
    } else {
        request.topic_names
    };
    let mut responses = Vec::with_capacity(names.len());
    for name in names {
        let mut result = DeletableTopicResult::default().with_name(Some(name.clone()));
        let request = Request::DeleteTopic {
            name: name.0.as_str().to_string(),
        };
        if let Err(e) = ctx.service.handle(ctx.session, request, Bytes::new()).await {
            result.error_code = errors::code(&e, About::Topic);
            if ctx.version() >= 5 {
                result.error_message = Some(str_bytes(e.message));
            }
        }
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub(super) async fn create_partitions(
    ctx: &Ctx<'_>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        let name = t.name.0.as_str().to_string();
        let mut result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let outcome = if t.count < 1 {
            Err(WireError::new(
                ErrorCode::INVALID_REQUEST,
                "a topic needs at least one partition",
            ))
        } else if request.validate_only {
            ctx.service
                .check(ctx.session, Operation::Alter, ResourceKind::Topic, &name)
                .and_then(|()| ctx.service.broker().topic(&name).map(drop))
        } else {
            let request = Request::AddPartitions {
                name,
                partitions: t.count as u32,
            };
            ctx.service
                .handle(ctx.session, request, Bytes::new())
                .await
                .map(drop)
        };
        if let Err(e) = outcome {
            result.error_code = if e.code == ErrorCode::INVALID_REQUEST {
                ResponseError::InvalidPartitions.code()
            } else {
                errors::code(&e, About::Topic)
            };
            result.error_message = Some(str_bytes(e.message));
        }
        results.push(result);
    }
    CreatePartitionsResponse::default().with_results(results)
}

pub(super) async fn describe_configs(
    ctx: &Ctx<'_>,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut results = Vec::with_capacity(request.resources.len());
    for r in request.resources {
        let mut result = DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let wanted = |name: &str| {
            r.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
        };
        let entry = |name: &str, value: String, read_only: bool| {
            DescribeConfigsResourceResult::default()
                .with_name(str_bytes(name))
                .with_value(Some(str_bytes(value)))
                .with_read_only(read_only)
                // 1: a topic's own setting; 5: the broker's default.
                .with_config_source(if read_only { 5 } else { 1 })
        };
        match r.resource_type {
            RESOURCE_TOPIC => {
                let request = Request::DescribeTopic {
                    name: r.resource_name.as_str().to_string(),
                };
                match ctx.service.handle(ctx.session, request, Bytes::new()).await {
                    Ok((Response::TopicDescription(d), _)) => {
                        result.configs = d
                            .configs
                            .into_iter()
                            .filter(|(k, _)| wanted(k))
                            .map(|(k, v)| entry(&k, v, false))
                            .collect();
                    }
                    Ok(_) => result.error_code = ResponseError::UnknownServerError.code(),
                    Err(e) => {
                        result.error_code = errors::code(&e, About::Topic);
                        result.error_message = Some(str_bytes(e.message));
                    }
                }
            }
            RESOURCE_BROKER => {
                let c = ctx.config;
                result.configs = [
                    (
                        "auto.create.topics.enable",
                        c.auto_create_topics.to_string(),
                    ),
                    ("num.partitions", c.auto_create_partitions.to_string()),
                    ("socket.request.max.bytes", c.frame_bytes_max.to_string()),
                ]
                .into_iter()
                .filter(|(k, _)| wanted(k))
                .map(|(k, v)| entry(k, v, true))
                .collect();
            }
            other => {
                result.error_code = ResponseError::InvalidRequest.code();
                result.error_message = Some(str_bytes(format!(
                    "resource type {other} is not described (2 topic, 4 broker)"
                )));
            }
        }
        results.push(result);
    }
    DescribeConfigsResponse::default().with_results(results)
}

pub(super) async fn incremental_alter_configs(
    ctx: &Ctx<'_>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for r in request.resources {
        let mut result = AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let name = r.resource_name.as_str().to_string();
        let outcome = alter(
            ctx,
            &name,
            r.resource_type,
            &r.configs,
            request.validate_only,
        )
        .await;
        if let Err(e) = outcome {
            result.error_code = errors::code(&e, About::Topic);
            result.error_message = Some(str_bytes(e.message));
        }
        responses.push(result);
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

async fn alter(
    ctx: &Ctx<'_>,
    name: &str,
    resource_type: i8,
    configs: &[incremental_alter_configs_request::AlterableConfig],
    validate_only: bool,
) -> Result<(), WireError> {
    if resource_type != RESOURCE_TOPIC {
        return Err(WireError::new(
            ErrorCode::INVALID_REQUEST,
            "only topic settings can be altered here; node settings live in its config file",
        ));
    }
    let mut pairs = Vec::with_capacity(configs.len());
    for c in configs {
        // 0 SET; DELETE, APPEND and SUBTRACT have no meaning for Strait's scalar settings.
        if c.config_operation != 0 {
            return Err(WireError::new(
                ErrorCode::INVALID_CONFIG,
                format!(
                    "{}: only SET is supported (operation {}); set the value you want",
                    c.name.as_str(),
                    c.config_operation
                ),
            ));
        }
        let value = c.value.as_ref().map(|v| v.as_str()).unwrap_or_default();
        pairs.push((c.name.as_str().to_string(), value.to_string()));
    }
    if validate_only {
        ctx.service
            .check(ctx.session, Operation::Alter, ResourceKind::Topic, name)?;
        let mut config = ctx.service.broker().topic(name)?.config.clone();
        for (k, v) in &pairs {
            config
                .set(k, v)
                .map_err(|e| WireError::new(ErrorCode::INVALID_CONFIG, e.to_string()))?;
        }
        return Ok(());
    }
    let request = Request::AlterTopicConfig {
        name: name.to_string(),
        configs: pairs,
    };
    ctx.service
        .handle(ctx.session, request, Bytes::new())
        .await
        .map(drop)
}

pub(super) async fn describe_cluster(
    ctx: &Ctx<'_>,
    _request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let (host, port) = host_port(ctx);
    let id = node_id(ctx);
    DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(ctx.service.broker().cluster.clone()))
        .with_controller_id(id.into())
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(id.into())
            .with_host(str_bytes(host))
            .with_port(port)])
}

pub(super) async fn find_coordinator(
    ctx: &Ctx<'_>,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let (host, port) = host_port(ctx);
    let id = node_id(ctx);
    // Key type 1 asks for a transaction coordinator: there is none. A non-retriable error
    // (with the reason in the message) makes a transactional client fail at once instead of
    // retrying until its timeout.
    let (code, message) = if request.key_type == 1 {
        (
            ResponseError::TransactionalIdAuthorizationFailed.code(),
            Some(str_bytes(
                "Kafka transactions are not supported by Strait; use an idempotent producer",
            )),
        )
    } else {
        (0, None)
    };
    let keys = if ctx.version() >= 4 {
        request.coordinator_keys
    } else {
        vec![request.key]
    };
    let coordinators = keys
        .into_iter()
        .map(|key| {
            Coordinator::default()
                .with_key(key)
                .with_node_id(if code == 0 { id } else { -1 }.into())
                .with_host(str_bytes(if code == 0 {
                    host.clone()
                } else {
                    String::new()
                }))
                .with_port(if code == 0 { port } else { -1 })
                .with_error_code(code)
                .with_error_message(message.clone())
        })
        .collect::<Vec<_>>();
    if ctx.version() >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let first = coordinators.first().cloned().unwrap_or_default();
    FindCoordinatorResponse::default()
        .with_error_code(first.error_code)
        .with_error_message(if ctx.version() >= 1 {
            first.error_message
        } else {
            None
        })
        .with_node_id(first.node_id)
        .with_host(first.host)
        .with_port(first.port)
}
