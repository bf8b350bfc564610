//! HTTP LLM executors (placeholder until the streaming clients land in this session).
use crate::{Executor, Failure, RunContext, RunResult};
use async_trait::async_trait;

pub struct Anthropic;
impl Anthropic {
    pub fn new() -> Self {
        Anthropic
    }
}
pub struct OpenAi;
impl OpenAi {
    pub fn new() -> Self {
        OpenAi
    }
}
#[async_trait]
impl Executor for Anthropic {
    async fn run(&self, _ctx: RunContext) -> RunResult {
        Err(Failure::new("misconfigured", "the anthropic executor is not built yet", false))
    }
}
#[async_trait]
impl Executor for OpenAi {
    async fn run(&self, _ctx: RunContext) -> RunResult {
        Err(Failure::new("misconfigured", "the openai executor is not built yet", false))
    }
}
