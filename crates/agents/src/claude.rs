//! Claude Code executor (in progress).
use crate::{Executor, Failure, RunContext, RunResult};
use async_trait::async_trait;
pub struct ClaudeCode;
#[async_trait]
impl Executor for ClaudeCode {
    async fn run(&self, _ctx: RunContext) -> RunResult {
        Err(Failure::new("misconfigured", "not built yet", false))
    }
}
