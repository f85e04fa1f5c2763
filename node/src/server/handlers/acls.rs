//! ACLs: list, add and remove the rules added at run time (the config file's are fixed).
//! Changes are persisted durably (fsync), so they run on a blocking thread.

use strait_protocol::{Request, Response, WireError};
use tracing::info;

use super::{blocking, plain, Answer};
use crate::server::service::{RequestService, Session};

pub(in crate::server) async fn serve(
    service: &RequestService,
    session: &Session,
    request: Request,
) -> Result<Answer, WireError> {
    let authz = service.authz_shared();
    match request {
        Request::ListAcls {} => plain(Response::Acls(authz.listing())),
        Request::AddAcl { rule } => {
            info!(principal = %session.principal(), %rule, "ACL added");
            let listing = blocking(move || {
                authz.add(rule)?;
                Ok(authz.listing())
            })
            .await?;
            plain(Response::Acls(listing))
        }
        Request::RemoveAcl { rule } => {
            info!(principal = %session.principal(), %rule, "ACL removed");
            let listing = blocking(move || {
                authz.remove(&rule)?;
                Ok(authz.listing())
            })
            .await?;
            plain(Response::Acls(listing))
        }
        _ => unreachable!("routed by the request service"),
    }
}
