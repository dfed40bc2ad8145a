//! `obby.query.QueryService`, the seed's Query service: read-only questions
//! about the history, on a port of its own (`--query-port`, 50053).
//!
//! Every call runs its queries in `spawn_blocking` on the api's reader pool
//! (never the engine's write connection), collects at most the request's
//! limit (100 by default, 10,000 at most) and streams them from memory, so
//! no connection or blocking thread waits on a slow client. The answers come
//! from [`crate::engine::history`] and [`crate::engine::search`]; timestamps
//! go out as unix seconds. A malformed request (a negative limit, an empty
//! or wordless query, an unbalanced quote, a reversed period) is
//! `INVALID_ARGUMENT` with the reason; a path outside the root is
//! `PERMISSION_DENIED`.

use std::pin::Pin;

use tokio::net::TcpListener;
use tokio_stream::Stream;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use super::proto::query::query_service_server::{QueryService, QueryServiceServer};
use super::proto::query::{
    ActivityStats, DiffQuery, DiffRecord, FileQuery, FileRecord, FileVersion, SearchQuery,
    SearchResult, SinceQuery, StatsQuery, TimeAnalysisResult, TimeQuery, TopicQuery,
};
use super::{Auth, blocking, inside_root, limits, proto, status_from};
use crate::engine::{
    DiffRow, EngineHandle, History, HistoryError, Period, SearchError, SearchOptions, fts_query,
    request_limit, to_unix,
};

/// The service.
#[derive(Clone)]
pub struct QueryServer {
    handle: EngineHandle,
}

/// Maps a history or search error to a status: the caller's mistakes are
/// `INVALID_ARGUMENT`, the rest `INTERNAL`.
fn status(e: HistoryError) -> Status {
    match e {
        HistoryError::Invalid(m) => Status::invalid_argument(m),
        HistoryError::Search(e) => search_status(e),
        HistoryError::Db(e) => Status::internal(e.to_string()),
    }
}

fn search_status(e: SearchError) -> Status {
    match e {
        SearchError::Query(q) => Status::invalid_argument(q.to_string()),
        SearchError::NoIndex => Status::failed_precondition(e.to_string()),
        SearchError::Db(e) => Status::internal(e.to_string()),
    }
}

fn sql(e: rusqlite::Error) -> Status {
    status(HistoryError::Db(e))
}

fn limit(requested: i32) -> Result<usize, Status> {
    request_limit(i64::from(requested)).map_err(status)
}

/// A stream of rows already read.
type Rows<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn rows<T: Send + 'static>(items: Vec<T>) -> Response<Rows<T>> {
    Response::new(Box::pin(tokio_stream::iter(items.into_iter().map(Ok))))
}

fn clamp_i32(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(if n < 0 { i32::MIN } else { i32::MAX })
}

fn diff_record(d: DiffRow) -> DiffRecord {
    DiffRecord {
        id: d.id,
        file_path: d.file_path,
        change_type: d.change_type,
        diff_content: d.diff_content,
        lines_added: clamp_i32(d.lines_added),
        lines_removed: clamp_i32(d.lines_removed),
        timestamp: d.timestamp,
        content_hash: d.content_hash,
        size: d.size,
    }
}

impl QueryServer {
    /// A service on `handle`.
    pub fn new(handle: EngineHandle) -> Self {
        QueryServer { handle }
    }

    /// Runs `f` on the handle's read side (a pooled connection) off the
    /// runtime.
    async fn with_history<T, F>(&self, f: F) -> Result<T, Status>
    where
        F: FnOnce(&History) -> Result<T, Status> + Send + 'static,
        T: Send + 'static,
    {
        let handle = self.handle.clone();
        blocking(move || {
            let history = handle.history().map_err(status_from)?;
            f(&history)
        })
        .await
    }
}

#[tonic::async_trait]
impl QueryService for QueryServer {
    type GetRecentDiffsStream = Rows<DiffRecord>;
    type GetDiffsSinceStream = Rows<DiffRecord>;
    type GetFileVersionsStream = Rows<FileVersion>;
    type SearchContentStream = Rows<SearchResult>;
    type GetTopicFilesStream = Rows<FileRecord>;

    async fn get_recent_diffs(
        &self,
        request: Request<DiffQuery>,
    ) -> Result<Response<Self::GetRecentDiffsStream>, Status> {
        let limit = limit(request.into_inner().limit)?;
        let found = self
            .with_history(move |h| h.recent_diffs(limit).map_err(sql))
            .await?;
        Ok(rows(found.into_iter().map(diff_record).collect()))
    }

    async fn get_diffs_since(
        &self,
        request: Request<SinceQuery>,
    ) -> Result<Response<Self::GetDiffsSinceStream>, Status> {
        let req = request.into_inner();
        let limit = limit(req.limit)?;
        let found = self
            .with_history(move |h| h.diffs_since(req.timestamp, limit).map_err(status))
            .await?;
        Ok(rows(found.into_iter().map(diff_record).collect()))
    }

    async fn get_file_versions(
        &self,
        request: Request<FileQuery>,
    ) -> Result<Response<Self::GetFileVersionsStream>, Status> {
        let req = request.into_inner();
        let limit = limit(req.limit)?;
        let path = inside_root(self.handle.root(), &req.file_path, None, "file_path")?;
        let path = path
            .to_str()
            .ok_or_else(|| Status::invalid_argument("file_path is not valid UTF-8"))?
            .to_owned();
        let found = self
            .with_history(move |h| h.file_versions(&path, limit).map_err(sql))
            .await?;
        Ok(rows(
            found
                .into_iter()
                .map(|v| FileVersion {
                    id: v.id,
                    file_path: v.file_path,
                    content_hash: v.content_hash,
                    size: v.size,
                    timestamp: v.timestamp,
                })
                .collect(),
        ))
    }

    async fn search_content(
        &self,
        request: Request<SearchQuery>,
    ) -> Result<Response<Self::SearchContentStream>, Status> {
        let req = request.into_inner();
        let opts = SearchOptions {
            all_versions: req.all_versions,
            prefix: req.prefix,
            limit: limit(req.limit)?,
        };
        // Refused before a connection is taken.
        fts_query(&req.query, opts.prefix).map_err(|e| search_status(SearchError::Query(e)))?;
        let hits = self
            .with_history(move |h| h.search(&req.query, &opts).map_err(search_status))
            .await?;
        Ok(rows(
            hits.into_iter()
                .map(|h| SearchResult {
                    file_path: h.file_path,
                    content: h.content.unwrap_or_default(),
                    highlighted: h.highlighted,
                    rank: h.rank as f32,
                    version_id: h.version_id,
                    timestamp: h.timestamp.as_deref().and_then(to_unix).unwrap_or(0),
                })
                .collect(),
        ))
    }

    async fn get_topic_files(
        &self,
        request: Request<TopicQuery>,
    ) -> Result<Response<Self::GetTopicFilesStream>, Status> {
        let req = request.into_inner();
        let limit = limit(req.limit)?;
        let (files, _) = self
            .with_history(move |h| h.topic_files(&req.topic, limit).map_err(status))
            .await?;
        Ok(rows(
            files
                .into_iter()
                .map(|f| FileRecord {
                    file_path: f.file_path,
                    last_modified: f.last_modified,
                    size: f.size,
                })
                .collect(),
        ))
    }

    async fn get_time_analysis(
        &self,
        request: Request<TimeQuery>,
    ) -> Result<Response<TimeAnalysisResult>, Status> {
        let req = request.into_inner();
        let period = Period::new(req.start_timestamp, req.end_timestamp).map_err(status)?;
        let a = self
            .with_history(move |h| h.time_analysis(&period).map_err(sql))
            .await?;
        Ok(Response::new(TimeAnalysisResult {
            total_files_changed: a.total_files_changed,
            total_lines_added: a.total_lines_added,
            total_lines_removed: a.total_lines_removed,
            top_topics: a.top_topics,
            top_keywords: a.top_keywords,
        }))
    }

    async fn get_activity_stats(
        &self,
        request: Request<StatsQuery>,
    ) -> Result<Response<ActivityStats>, Status> {
        let req = request.into_inner();
        let period = Period::new(req.start_timestamp, req.end_timestamp).map_err(status)?;
        let a = self
            .with_history(move |h| h.activity(&period).map_err(sql))
            .await?;
        Ok(Response::new(ActivityStats {
            files_changed: a.files_changed,
            total_changes: a.total_changes,
            lines_added: a.lines_added,
            lines_removed: a.lines_removed,
            avg_changes_per_file: a.avg_changes_per_file as f32,
        }))
    }
}

/// Serves the Query service (with health and reflection, and the token
/// rule of every other service) on `listener` until `stop` turns true.
pub(super) async fn serve(
    handle: EngineHandle,
    listener: TcpListener,
    auth: Auth,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<QueryServiceServer<QueryServer>>()
        .await;
    let reflection = match tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::DESCRIPTOR)
        .with_service_name(proto::query::query_service_server::SERVICE_NAME)
        .build_v1()
    {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "no gRPC reflection on the query port");
            None
        }
    };
    let service = QueryServiceServer::new(QueryServer::new(handle))
        .max_decoding_message_size(limits::DEFAULT_REQUEST_BYTES);
    let router = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(limits::MAX_CALLS_PER_CONNECTION)
        .max_concurrent_streams(Some(limits::MAX_STREAMS_PER_CONNECTION))
        .add_service(health)
        .add_optional_service(reflection.map(|r| InterceptedService::new(r, auth.clone())))
        .add_service(InterceptedService::new(service, auth));
    // Replies are written without Nagle's delay: a small reply (a search
    // with a few hits) otherwise waits for the client's delayed ACK, 40 ms.
    let incoming = super::incoming(listener);
    router
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}
