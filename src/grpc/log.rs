//! `portcullis.v1.LogService`.

use tonic::{Request, Response, Status};

use super::bearer;
use super::pb::log_service_server::LogService;
use super::pb::*;
use crate::service::Auth;

pub struct LogApi {
    auth: Auth,
}

impl LogApi {
    pub fn new(auth: Auth) -> Self {
        LogApi { auth }
    }
}

#[tonic::async_trait]
impl LogService for LogApi {
    async fn create_event(
        &self,
        request: Request<CreateEventRequest>,
    ) -> Result<Response<CreateEventResponse>, Status> {
        let event_id = self
            .auth
            .create_event(&bearer(&request)?, &request.get_ref().name)
            .await?;
        Ok(Response::new(CreateEventResponse { event_id }))
    }

    async fn add_log(
        &self,
        request: Request<AddLogRequest>,
    ) -> Result<Response<AddLogResponse>, Status> {
        let body = request.get_ref();
        self.auth
            .add_log(&body.event_id, body.data.as_deref())
            .await?;
        Ok(Response::new(AddLogResponse {}))
    }

    async fn list_logs(
        &self,
        request: Request<ListLogsRequest>,
    ) -> Result<Response<ListLogsResponse>, Status> {
        let token = bearer(&request)?;
        let body = request.get_ref();
        let page = self
            .auth
            .list_logs(&token, &body.event_id, body.page_size, &body.page_token)
            .await?;
        Ok(Response::new(ListLogsResponse {
            logs: page
                .logs
                .into_iter()
                .map(|log| Log {
                    id: log.id,
                    data: log.data,
                    created_at: Some(prost_types::Timestamp {
                        seconds: log.created_at,
                        nanos: 0,
                    }),
                })
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }
}
