//! The request service: a request and the session that sent it in, an answer out. It is the
//! same for every front door (the QUIC transport, the in-process endpoint of a flow, and next
//! the Kafka wire and replication): the Hello handshake, authorization before any resource is
//! looked up, metrics, and routing to the handler rooms.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use strait_protocol::acl::{Operation, ResourceKind};
use strait_protocol::message::{VERSION_MAX, VERSION_MIN};
use strait_protocol::{ErrorCode, Request, Response, WireError};
use tracing::warn;

use super::handlers::{self, Answer};
use crate::authz::Authorizer;
use crate::broker::Broker;
use crate::groups::GroupCoordinator;
use crate::metrics::Metrics;
use crate::quota::{Direction, Quotas};

/// Serves requests against one node's broker, group coordinator and ACLs.
pub struct RequestService {
    broker: Arc<Broker>,
    groups: Arc<GroupCoordinator>,
    authz: Arc<Authorizer>,
    metrics: Arc<Metrics>,
    quotas: Arc<Quotas>,
    /// The address clients reach this node at (metadata answers).
    advertised: String,
    /// The flows this node runs; set once they exist (they need the service themselves).
    flows: OnceLock<Arc<strait_mirror::FlowManager>>,
    /// The flows that copy from this node.
    outgoing: Arc<super::outgoing::OutgoingFlows>,
    /// This node's controller member, once it has started (replaced when it restarts).
    controller: std::sync::RwLock<Option<Arc<crate::controller::Controller>>>,
}

/// Who sent a request, as the service needs to know: the principal and role from the peer's
/// certificate, and whether the session said Hello yet.
pub struct Session {
    pub(super) principal: Arc<str>,
    pub(super) role: Option<strait_certs::Role>,
    /// The node itself (a flow it runs as gateway): ACLs do not apply.
    pub(super) trusted: bool,
    hello: AtomicBool,
    /// What the peer called itself in its Hello.
    client_id: OnceLock<Arc<str>>,
}

impl Session {
    /// A session of a peer authenticated by its certificate; it must say Hello first.
    pub fn new(principal: Arc<str>, role: Option<strait_certs::Role>) -> Session {
        Session {
            principal,
            role,
            trusted: false,
            hello: AtomicBool::new(false),
            client_id: OnceLock::new(),
        }
    }

    /// A session authenticated by its transport that has no Hello of its own (the Kafka
    /// wire): past Hello from the start.
    pub fn authenticated(principal: Arc<str>, role: Option<strait_certs::Role>) -> Session {
        let s = Session::new(principal, role);
        s.hello.store(true, Ordering::Release);
        s
    }

    /// The node's own session (flows it runs as gateway): trusted, past Hello.
    pub fn trusted(principal: &str) -> Session {
        Session {
            principal: principal.into(),
            role: Some(strait_certs::Role::Node),
            trusted: true,
            hello: AtomicBool::new(true),
            client_id: OnceLock::new(),
        }
    }

    /// What the peer called itself in its Hello (empty before).
    pub fn client_id(&self) -> &str {
        self.client_id.get().map_or("", |c| c)
    }

    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// Mirror flows (and nodes running flows as gateways) may create mirror topics and append
    /// copied batches; clients may not, whatever else they are allowed.
    /// Whether the peer runs mirror flows (or is the node itself): it is told where mirrored
    /// batches came from when it fetches them.
    pub(super) fn is_mirror(&self) -> bool {
        self.trusted
            || matches!(
                self.role,
                Some(strait_certs::Role::Mirror | strait_certs::Role::Node)
            )
    }

    pub(super) fn require_mirror(&self, what: &str) -> Result<(), WireError> {
        match self.role {
            Some(strait_certs::Role::Mirror | strait_certs::Role::Node) => Ok(()),
            _ => {
                warn!(principal = %self.principal, what, "refused: not a mirror principal");
                Err(WireError::new(
                    ErrorCode::UNAUTHORIZED,
                    format!(
                        "{what} is for mirror flows; principal {:?} presented a {} certificate. \
                         Issue one with `strait certs issue --dir CA_DIR --name NAME --role mirror` and run the flow with it",
                        self.principal,
                        self.role.map(|r| r.as_str()).unwrap_or("role-less")
                    ),
                ))
            }
        }
    }
}

impl RequestService {
    pub fn new(
        broker: Arc<Broker>,
        groups: Arc<GroupCoordinator>,
        authz: Arc<Authorizer>,
        metrics: Arc<Metrics>,
        quotas: Arc<Quotas>,
        advertised: String,
    ) -> RequestService {
        RequestService {
            broker,
            groups,
            authz,
            metrics,
            quotas,
            advertised,
            flows: OnceLock::new(),
            outgoing: Arc::default(),
            controller: std::sync::RwLock::new(None),
        }
    }

    /// The flows that copy from this node (for the status page).
    /// Notes where a flow reading over `session` stands in a partition (what `/status` shows
    /// of the flows that copy from this node); readers other than flows are not noted.
    pub(super) fn note_reader_position(
        &self,
        session: &Session,
        topic: &str,
        partition: u32,
        offset: u64,
    ) {
        if session.is_mirror() {
            self.outgoing.record(
                session.client_id(),
                &session.principal,
                topic,
                partition,
                offset,
                crate::now_ms(),
            );
        }
    }

    pub fn outgoing(&self) -> Arc<super::outgoing::OutgoingFlows> {
        self.outgoing.clone()
    }

    /// Hands the service the node's controller member (again, when it restarts).
    pub fn set_controller(&self, controller: Arc<crate::controller::Controller>) {
        *self.controller.write().unwrap_or_else(|e| e.into_inner()) = Some(controller);
    }

    /// This node's controller member, once started.
    pub fn controller(&self) -> Option<Arc<crate::controller::Controller>> {
        self.controller
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Hands the service the node's flows, so the admin plane can manage them.
    pub fn set_flows(&self, flows: Arc<strait_mirror::FlowManager>) {
        let _ = self.flows.set(flows);
    }

    pub(super) fn flows(&self) -> Result<Arc<strait_mirror::FlowManager>, WireError> {
        self.flows.get().cloned().ok_or_else(|| {
            WireError::new(
                ErrorCode::INVALID_REQUEST,
                "this node runs no flows (yet); retry once it is ready",
            )
        })
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    pub fn groups(&self) -> Arc<GroupCoordinator> {
        self.groups.clone()
    }

    pub(super) fn group_coordinator(&self) -> &GroupCoordinator {
        &self.groups
    }

    pub(super) fn advertised(&self) -> &str {
        &self.advertised
    }

    pub(super) fn authz_shared(&self) -> Arc<Authorizer> {
        self.authz.clone()
    }

    /// Whether `session` may do `op` to a resource, per the node's ACLs.
    pub(super) fn may(
        &self,
        session: &Session,
        op: Operation,
        kind: ResourceKind,
        name: &str,
    ) -> bool {
        session.trusted || self.authz.allows(&session.principal, op, kind, name)
    }

    /// Like [`RequestService::may`], with the refusal the client sees (naming the rule).
    pub(super) fn check(
        &self,
        session: &Session,
        op: Operation,
        kind: ResourceKind,
        name: &str,
    ) -> Result<(), WireError> {
        if session.trusted {
            return Ok(());
        }
        self.authz.check(&session.principal, op, kind, name)
    }

    /// Serves one request and counts it: kind, outcome, latency, and for produce, fetch and
    /// mirror appends the topic's bytes and records.
    pub async fn handle(
        &self,
        session: &Session,
        request: Request,
        payload: Bytes,
    ) -> Result<Answer, WireError> {
        let started = std::time::Instant::now();
        let kind = request.kind();
        let io = match &request {
            Request::Produce { topic, .. } | Request::MirrorAppend { topic, .. } => {
                Some((topic.clone(), 0))
            }
            Request::Fetch { topic, offset, .. } => Some((topic.clone(), *offset)),
            _ => None,
        };
        let in_bytes = payload.len() as u64;
        let (request, reserved) = self.throttle(session, request, in_bytes).await?;
        let answer = self.serve(session, request, payload).await;
        if let Some((direction, bytes)) = reserved {
            let used = match (&answer, direction) {
                (Ok((_, out)), Direction::Fetch) => out.iter().map(|b| b.len() as u64).sum(),
                (Ok(_), Direction::Produce) => bytes,
                (Err(_), _) => 0,
            };
            self.quotas
                .settle(&session.principal, direction, bytes, used);
        }
        let m = &self.metrics;
        m.request(kind, answer.is_ok(), started.elapsed());
        if let (Some((topic, from)), Ok((response, out))) = (io, &answer) {
            m.topic(&topic, |t| {
                handlers::count_io(t, kind, response, out, in_bytes, from)
            });
        }
        answer
    }

    /// Charges a produce or fetch to the principal's quota before the work (see
    /// `crate::quota`): waits for the reservation, or refuses when it would wait too long. A
    /// fetch's answer is clamped to what it reserved. Answers the request to serve and what was
    /// reserved, to settle once the answer is known.
    async fn throttle(
        &self,
        session: &Session,
        mut request: Request,
        in_bytes: u64,
    ) -> Result<(Request, Option<(Direction, u64)>), WireError> {
        if session.trusted {
            return Ok((request, None));
        }
        let (direction, bytes) = match &mut request {
            Request::Produce { .. } => (Direction::Produce, in_bytes),
            Request::Fetch { max_bytes, .. } => match self.quotas.fetch_cap(&session.principal) {
                Some(cap) => {
                    *max_bytes = (*max_bytes).min(u32::try_from(cap).unwrap_or(u32::MAX));
                    (Direction::Fetch, u64::from(*max_bytes))
                }
                None => return Ok((request, None)),
            },
            _ => return Ok((request, None)),
        };
        let wait = self
            .quotas
            .reserve(&session.principal, direction, bytes)
            .map_err(|over| {
                self.metrics.event("quota_refused");
                WireError::new(
                    ErrorCode::THROTTLED,
                    format!(
                        "principal {:?} is over its {} quota of {} bytes/s (this request would wait {:.1} s); retry later, or raise the quota in [quotas]",
                        session.principal,
                        match direction {
                            Direction::Produce => "produce",
                            Direction::Fetch => "fetch",
                        },
                        over.rate_bytes_per_sec,
                        over.wait.as_secs_f64()
                    ),
                )
            })?;
        if !wait.is_zero() {
            self.metrics.event(match direction {
                Direction::Produce => "quota_throttled_produce",
                Direction::Fetch => "quota_throttled_fetch",
            });
            tokio::time::sleep(wait).await;
        }
        Ok((request, Some((direction, bytes))))
    }

    async fn serve(
        &self,
        session: &Session,
        request: Request,
        payload: Bytes,
    ) -> Result<Answer, WireError> {
        if !matches!(request, Request::Hello { .. }) && !session.hello.load(Ordering::Acquire) {
            return Err(WireError::new(
                ErrorCode::HELLO_REQUIRED,
                "send Hello first on a new connection",
            ));
        }
        self.authorize(session, &request)?;
        if matches!(
            request,
            Request::Produce { .. } | Request::MirrorAppend { .. }
        ) {
            // Writes only while the controller counts this node alive (see `may_lead`).
            if let Some(controller) = self.controller() {
                controller
                    .may_lead()
                    .map_err(|why| WireError::new(ErrorCode::NOT_LEADER, why))?;
            }
        }
        match request {
            Request::Hello {
                version_min,
                version_max,
                client_id,
            } => {
                let _ = session.client_id.set(client_id.into());
                self.hello(session, version_min, version_max)
            }
            Request::Produce { .. }
            | Request::Fetch { .. }
            | Request::ListOffsets { .. }
            | Request::InitProducer {} => {
                handlers::data::serve(self, request, payload, session.is_mirror()).await
            }
            Request::Metadata { .. }
            | Request::CreateTopic { .. }
            | Request::DeleteTopic { .. }
            | Request::AlterTopicConfig { .. }
            | Request::DescribeTopic { .. }
            | Request::AddPartitions { .. } => {
                handlers::topics::serve(self, session, request).await
            }
            Request::JoinGroup(_)
            | Request::SyncGroup { .. }
            | Request::Heartbeat { .. }
            | Request::LeaveGroup { .. }
            | Request::CommitOffsets { .. }
            | Request::FetchOffsets { .. }
            | Request::ListGroups {}
            | Request::DescribeGroup { .. } => {
                handlers::groups::serve(self, session, request).await
            }
            Request::CreateMirrorTopic { .. }
            | Request::TranslateOffset { .. }
            | Request::MirrorAppend { .. }
            | Request::MirrorResume { .. } => {
                handlers::mirror::serve(self, session, request, payload).await
            }
            Request::ListAcls {} | Request::AddAcl { .. } | Request::RemoveAcl { .. } => {
                handlers::acls::serve(self, session, request).await
            }
            Request::PutFlow { .. }
            | Request::RemoveFlow { .. }
            | Request::PromoteFlow { .. }
            | Request::FailbackTopic { .. } => handlers::admin::serve(self, session, request).await,
            Request::DescribeCluster {} => match self.controller() {
                Some(controller) => Ok((Response::Cluster(controller.describe()), Vec::new())),
                None => Err(WireError::new(
                    ErrorCode::TIMEOUT,
                    "this node's controller has not started yet; retry in a moment",
                )),
            },
            Request::FetchStream { .. } | Request::FetchCredit { .. } => Err(WireError::new(
                ErrorCode::INVALID_REQUEST,
                "fetch_stream opens a QUIC stream of its own and fetch_credit only travels on one; \
                 send them on the node's QUIC listener",
            )),
            _ => Err(WireError::new(
                ErrorCode::INVALID_REQUEST,
                "this node does not know that request; upgrade it",
            )),
        }
    }

    fn hello(
        &self,
        session: &Session,
        version_min: u16,
        version_max: u16,
    ) -> Result<Answer, WireError> {
        if version_max < VERSION_MIN || version_min > VERSION_MAX {
            return Err(WireError::new(
                ErrorCode::UNSUPPORTED_VERSION,
                format!("client speaks versions {version_min}..={version_max}, node speaks {VERSION_MIN}..={VERSION_MAX}; upgrade the older side"),
            ));
        }
        session.hello.store(true, Ordering::Release);
        Ok((
            Response::Hello {
                version: version_max.min(VERSION_MAX),
                cluster: self.broker.cluster.clone(),
                node_id: self.broker.node_id.0,
                principal: session.principal.to_string(),
            },
            Vec::new(),
        ))
    }

    /// The checks a request passes before it is served. Listings (metadata, groups) are
    /// filtered instead, and a translation is checked against the topic it resolves to.
    fn authorize(&self, session: &Session, request: &Request) -> Result<(), WireError> {
        use ResourceKind::{Cluster, Group, Topic};
        let check = |op, kind, name: &str| self.check(session, op, kind, name);
        let mirror_or = |op, name: &str| -> Result<(), WireError> {
            // A flow keeps its mirror topics' partitions and settings in line with the source.
            let is_mirror = self.broker.topic(name).is_ok_and(|t| t.mirror.is_some());
            if is_mirror && self.may(session, Operation::Mirror, Topic, name) {
                return Ok(());
            }
            check(op, Topic, name)
        };
        match request {
            Request::Hello { .. }
            | Request::Metadata { .. }
            | Request::ListGroups {}
            | Request::TranslateOffset { .. } => Ok(()),
            Request::CreateTopic { name, .. } => check(Operation::Create, Topic, name),
            Request::DeleteTopic { name } => check(Operation::Delete, Topic, name),
            Request::AlterTopicConfig { name, .. } | Request::AddPartitions { name, .. } => {
                mirror_or(Operation::Alter, name)
            }
            Request::DescribeTopic { name } => check(Operation::Describe, Topic, name),
            Request::ListOffsets { topic, .. } => check(Operation::Describe, Topic, topic),
            Request::Produce { topic, .. } => check(Operation::Write, Topic, topic),
            Request::Fetch { topic, .. } => check(Operation::Read, Topic, topic),
            Request::InitProducer {} => {
                // Producer ids are a node-wide resource: any principal that may write somewhere.
                if session.trusted
                    || self
                        .broker
                        .topics()
                        .iter()
                        .any(|t| self.may(session, Operation::Write, Topic, t.name.as_str()))
                {
                    Ok(())
                } else {
                    check(Operation::Write, Topic, "*")
                }
            }
            Request::JoinGroup(join) => check(Operation::Group, Group, &join.group),
            Request::SyncGroup { group, .. }
            | Request::Heartbeat { group, .. }
            | Request::LeaveGroup { group, .. } => check(Operation::Group, Group, group),
            Request::CommitOffsets { group, offsets, .. } => {
                check(Operation::Group, Group, group)?;
                offsets
                    .iter()
                    .try_for_each(|o| check(Operation::Read, Topic, &o.topic))
            }
            Request::FetchOffsets { group, .. } | Request::DescribeGroup { group } => {
                check(Operation::Describe, Group, group)
            }
            Request::CreateMirrorTopic { name, .. } => check(Operation::Mirror, Topic, name),
            Request::MirrorAppend { topic, .. } | Request::MirrorResume { topic, .. } => {
                check(Operation::Mirror, Topic, topic)
            }
            Request::ListAcls {} | Request::DescribeCluster {} => {
                check(Operation::Describe, Cluster, "")
            }
            Request::AddAcl { .. }
            | Request::RemoveAcl { .. }
            | Request::PutFlow { .. }
            | Request::RemoveFlow { .. } => check(Operation::Alter, Cluster, ""),
            // Checked per mirror topic by the handler, before anything stops.
            Request::PromoteFlow { .. } => Ok(()),
            Request::FailbackTopic { name, .. } => check(Operation::Alter, Topic, name),
            _ => Ok(()),
        }
    }
}
