//! Consumer groups: the join/sync/heartbeat/leave protocol and committed offsets, served by the
//! node's group coordinator (`crate::groups`). Group listings are filtered by what the session
//! may describe.

use strait_protocol::acl::{Operation, ResourceKind};
use strait_protocol::{ErrorCode, Request, Response, WireError};

use super::{plain, Answer};
use crate::server::service::{RequestService, Session};

pub(in crate::server) async fn serve(
    service: &RequestService,
    session: &Session,
    request: Request,
) -> Result<Answer, WireError> {
    let groups = service.group_coordinator();
    match request {
        Request::JoinGroup(join) => {
            let (generation, member_id, leader, members) =
                groups.join(join, session.principal()).await?;
            plain(Response::Joined {
                generation,
                member_id,
                leader,
                members,
            })
        }
        Request::SyncGroup {
            group,
            member_id,
            generation,
        } => plain(Response::Synced {
            assignment: groups.sync(&group, &member_id, generation)?,
        }),
        Request::Heartbeat {
            group,
            member_id,
            generation,
        } => {
            groups.heartbeat(&group, &member_id, generation)?;
            plain(Response::Ack)
        }
        Request::LeaveGroup { group, member_id } => {
            groups.leave(&group, &member_id)?;
            plain(Response::Ack)
        }
        Request::CommitOffsets {
            group,
            member_id,
            generation,
            offsets,
        } => {
            groups
                .commit(&group, &member_id, generation, offsets)
                .await?;
            plain(Response::Ack)
        }
        Request::FetchOffsets { group, partitions } => plain(Response::CommittedOffsets(
            groups.fetch_offsets(&group, partitions),
        )),
        Request::ListGroups {} => plain(Response::Groups(
            groups
                .list()
                .into_iter()
                .filter(|g| {
                    service.may(session, Operation::Describe, ResourceKind::Group, &g.group)
                })
                .collect(),
        )),
        Request::DescribeGroup { group } => match groups.describe(&group) {
            Some(d) => plain(Response::GroupDescription(d)),
            None => Err(WireError::new(
                ErrorCode::UNKNOWN_GROUP,
                format!("group {group:?} does not exist (no members, no committed offsets)"),
            )),
        },
        _ => unreachable!("routed by the request service"),
    }
}
