//! A person in the loop: the requests an attempt waits on — an approval of a tool call, or a
//! question — their answers, and the tool-call patterns (`approve = ["Bash(git push:*)"]`) that
//! say which calls need a person.
//!
//! A request parks its task (`waiting_input`): the attempt ends without spending itself and
//! holds no lease or slot. An answer (or the request's timeout) queues the task again, and its
//! next attempt resumes with the answer. Requests and answers are durable rows of the store.

use crate::{Error, Micros, Result, TaskId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest question, reason or answer message, in bytes.
pub const MAX_TEXT: usize = 16 * 1024;
/// Longest tool-call pattern, in bytes.
pub const MAX_PATTERN: usize = 1024;
/// Patterns an agent may name at most.
pub const MAX_PATTERNS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// May this tool call run? Answered allow or deny.
    Approval,
    /// A free-text question; the answer is text.
    Input,
}

impl RequestKind {
    pub const ALL: [RequestKind; 2] = [RequestKind::Approval, RequestKind::Input];
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Approval => "approval",
            RequestKind::Input => "input",
        }
    }
}
crate::named_enum!(RequestKind, "request kind");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    Pending,
    Allowed,
    Denied,
    Answered,
    /// Its task ended (cancelled) before anybody answered.
    Cancelled,
}

impl ApprovalStatus {
    pub const ALL: [ApprovalStatus; 5] = [
        ApprovalStatus::Pending,
        ApprovalStatus::Allowed,
        ApprovalStatus::Denied,
        ApprovalStatus::Answered,
        ApprovalStatus::Cancelled,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Allowed => "allowed",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Answered => "answered",
            ApprovalStatus::Cancelled => "cancelled",
        }
    }
}
crate::named_enum!(ApprovalStatus, "approval status");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    #[default]
    Deny,
}

impl Decision {
    pub const ALL: [Decision; 2] = [Decision::Allow, Decision::Deny];
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}
crate::named_enum!(Decision, "decision");

/// The tool call an approval is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub name: String,
    pub input: Value,
}

/// What an attempt asks, before it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRequest {
    pub kind: RequestKind,
    pub tool: Option<ToolCall>,
    /// The question (`input`), or why the call is wanted (`approval`).
    pub text: Option<String>,
    pub expires_at: Option<Micros>,
    /// What an unanswered request becomes when it expires.
    pub on_timeout: Decision,
    /// The asking executor's own state to resume from (the LLM executors' conversation); kept
    /// with the request, handed back to the attempt that resumes, never served.
    pub state: Option<Value>,
}

impl NewRequest {
    pub fn validate(&self) -> Result<()> {
        match (self.kind, &self.tool, &self.text) {
            (RequestKind::Approval, None, None) => {
                return Err(Error::invalid("an approval request needs a tool call or a reason"))
            }
            (RequestKind::Input, _, None) => return Err(Error::invalid("a question needs its text")),
            _ => {}
        }
        if self.text.as_ref().is_some_and(|t| t.len() > MAX_TEXT || t.trim().is_empty()) {
            return Err(Error::invalid(format!("the request's text must be 1..={MAX_TEXT} bytes")));
        }
        if let Some(t) = &self.tool {
            if t.name.is_empty() || t.name.len() > 256 {
                return Err(Error::invalid("the tool call's name must be 1..=256 bytes"));
            }
        }
        Ok(())
    }
}

/// A person's answer to a request (`POST /v1/tasks/{id}/approvals/{aid}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AnswerBody {
    /// For an approval: allow or deny. For a question: deny declines to answer.
    #[serde(default)]
    pub decision: Option<Decision>,
    /// Shown to the agent with the decision.
    #[serde(default)]
    pub message: Option<String>,
    /// An approval's tool call, edited: it runs with these arguments instead.
    #[serde(default)]
    pub input: Option<Value>,
    /// A question's answer.
    #[serde(default)]
    pub answer: Option<String>,
}

/// A stored answer: what was decided, by whom and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub decision: Decision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// The actor who answered, or `timeout`.
    pub by: String,
    pub at: Micros,
}

impl Answer {
    /// A denial as the agent is told it: who denied, and their note.
    pub fn denial(&self) -> String {
        match &self.message {
            Some(m) => format!("A person ({}) denied this: {m}", self.by),
            None => format!("A person ({}) denied this.", self.by),
        }
    }
}

impl AnswerBody {
    /// The answer this body gives to a request of `kind`, or why it cannot be one.
    pub fn answer(self, kind: RequestKind, by: &str, at: Micros) -> Result<Answer> {
        for (field, text) in [("message", &self.message), ("answer", &self.answer)] {
            if text.as_ref().is_some_and(|t| t.len() > MAX_TEXT) {
                return Err(Error::unprocessable(format!("{field} must be at most {MAX_TEXT} bytes")));
            }
        }
        let decision = match (kind, self.decision, &self.answer) {
            (RequestKind::Approval, None, _) => {
                return Err(Error::unprocessable("decision is required: \"allow\" or \"deny\""))
            }
            (RequestKind::Approval, Some(_), Some(_)) => {
                return Err(Error::unprocessable("answer is for questions; an approval takes decision"))
            }
            (RequestKind::Approval, Some(d), None) => d,
            (RequestKind::Input, Some(Decision::Deny), _) => Decision::Deny,
            (RequestKind::Input, _, Some(_)) => Decision::Allow,
            (RequestKind::Input, _, None) => return Err(Error::unprocessable("answer is required for a question")),
        };
        if self.input.is_some() && (kind != RequestKind::Approval || decision != Decision::Allow) {
            return Err(Error::unprocessable("input (edited arguments) goes only with an allowed approval"));
        }
        if self.input.as_ref().is_some_and(|v| !v.is_object()) {
            return Err(Error::unprocessable("input must be an object: the tool call's arguments"));
        }
        Ok(Answer { decision, message: self.message, input: self.input, answer: self.answer, by: by.into(), at })
    }
}

/// A request as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    pub task_id: TaskId,
    pub tenant: String,
    pub agent: String,
    /// The attempt that asked.
    pub attempt: u32,
    pub kind: RequestKind,
    pub status: ApprovalStatus,
    pub tool: Option<ToolCall>,
    pub text: Option<String>,
    pub created_at: Micros,
    pub expires_at: Option<Micros>,
    pub on_timeout: Decision,
    pub answer: Option<Answer>,
    /// A later attempt has been handed the answer (an allow is used once).
    pub used: bool,
    /// The asking executor's state (see [`NewRequest::state`]): never served.
    #[serde(skip)]
    pub state: Option<Value>,
}

impl Approval {
    /// Whether this request asks what `req` asks (a resumed attempt asking again).
    pub fn same_request(&self, kind: RequestKind, tool: Option<&ToolCall>, text: Option<&str>) -> bool {
        self.kind == kind
            && match (kind, &self.tool, tool) {
                (RequestKind::Approval, Some(a), Some(b)) => a == b,
                (RequestKind::Approval, None, None) | (RequestKind::Input, _, _) => self.text.as_deref() == text,
                _ => false,
            }
    }

    /// The answer, when one was given and an attempt may still use it: a deny always, an allow
    /// (or a question's answer) once.
    pub fn usable_answer(&self) -> Option<&Answer> {
        let a = self.answer.as_ref()?;
        (a.decision == Decision::Deny || !self.used).then_some(a)
    }
}

/// A new request's id.
pub fn new_id() -> String {
    format!("apr_{}", uuid::Uuid::now_v7().simple())
}

/// A tool-call pattern: `Tool`, `Tool(argument)`, where the argument is `prefix:*` (the call's
/// command or path starts with `prefix`) or a glob (`*` any run of characters but `/`, `**` any
/// run at all; for `Bash` `*` crosses `/` too). Tool names may use `*` (`mcp__github__*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    tool: String,
    arg: Option<Arg>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Arg {
    Prefix(String),
    Glob(String),
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern> {
        let bad = |why: &str| Err(Error::unprocessable(format!("approve pattern {text:?}: {why}")));
        if text.is_empty() || text.len() > MAX_PATTERN {
            return bad(&format!("must be 1..={MAX_PATTERN} bytes"));
        }
        let (tool, arg) = match text.find('(') {
            Some(open) => {
                let Some(inner) = text[open + 1..].strip_suffix(')') else {
                    return bad("an argument in parentheses must end the pattern");
                };
                if inner.is_empty() {
                    return bad("the argument in parentheses is empty");
                }
                let arg = match inner.strip_suffix(":*") {
                    Some(prefix) => Arg::Prefix(prefix.to_string()),
                    None => Arg::Glob(inner.to_string()),
                };
                (&text[..open], Some(arg))
            }
            None => (text, None),
        };
        let name_ok = !tool.is_empty()
            && tool.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'*'));
        if !name_ok {
            return bad("the tool name may hold letters, digits, `_`, `-`, `.` and `*` only");
        }
        Ok(Pattern { tool: tool.to_string(), arg, text: text.to_string() })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a call of `tool` with `input` matches.
    pub fn matches(&self, tool: &str, input: &Value) -> bool {
        if !glob(self.tool.as_bytes(), tool.as_bytes(), true) {
            return false;
        }
        let Some(arg) = &self.arg else { return true };
        let shell = tool == "Bash";
        let subject = subject(tool, input);
        // a shell line is checked command by command: `cd x && git push` is a `git push`
        let parts: Vec<&str> = if shell { split_commands(&subject) } else { vec![subject.as_str()] };
        parts.iter().any(|part| match arg {
            Arg::Prefix(p) => part.starts_with(p.as_str()),
            Arg::Glob(g) => glob(g.as_bytes(), part.as_bytes(), shell),
        })
    }
}

/// The patterns of an agent's `approve`, parsed; the first bad one is the error.
pub fn parse_patterns(texts: &[String]) -> Result<Vec<Pattern>> {
    if texts.len() > MAX_PATTERNS {
        return Err(Error::unprocessable(format!("approve names at most {MAX_PATTERNS} patterns")));
    }
    texts.iter().map(|t| Pattern::parse(t)).collect()
}

/// The first of `patterns` a call matches.
pub fn first_match<'a>(patterns: &'a [Pattern], tool: &str, input: &Value) -> Option<&'a Pattern> {
    patterns.iter().find(|p| p.matches(tool, input))
}

/// What a pattern's argument is checked against: the command of a shell call, the path of a
/// file tool, the URL of a fetch, else the first of those fields the input has, else its JSON.
fn subject(tool: &str, input: &Value) -> String {
    let field = match tool {
        "Bash" => Some("command"),
        "Read" | "Write" | "Edit" | "MultiEdit" => Some("file_path"),
        "NotebookEdit" => Some("notebook_path"),
        "WebFetch" => Some("url"),
        "WebSearch" => Some("query"),
        _ => None,
    };
    let fields = field.into_iter().chain(["command", "file_path", "path", "url"]);
    for f in fields {
        if let Some(s) = input.get(f).and_then(Value::as_str) {
            return s.to_string();
        }
    }
    input.to_string()
}

/// A shell line's commands: split at `&&`, `||`, `;`, `|`, `&` and newlines, each trimmed, with
/// leading `VAR=value` assignments dropped.
fn split_commands(line: &str) -> Vec<&str> {
    line.split(['\n', ';', '|', '&'])
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            let mut rest = c;
            while let Some((word, after)) = rest.split_once(char::is_whitespace) {
                let assignment = word.split_once('=').is_some_and(|(name, _)| {
                    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                });
                if !assignment {
                    break;
                }
                rest = after.trim_start();
            }
            rest
        })
        .collect()
}

/// Glob match: `**` any run of bytes, `*` any run but `/` (any run at all when `flat`).
fn glob(pattern: &[u8], text: &[u8], flat: bool) -> bool {
    // iterative with one backtrack point per star kind, like fnmatch
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize, bool)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            let deep = flat || pattern.get(p + 1) == Some(&b'*');
            p += if pattern.get(p + 1) == Some(&b'*') { 2 } else { 1 };
            star = Some((p, t, deep));
            continue;
        }
        if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
            continue;
        }
        match star {
            Some((sp, st, deep)) if deep || text[st] != b'/' => {
                star = Some((sp, st + 1, deep));
                p = sp;
                t = st + 1;
            }
            _ => return false,
        }
    }
    pattern[p..].iter().all(|b| *b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(pattern: &str, tool: &str, input: Value) -> bool {
        Pattern::parse(pattern).unwrap().matches(tool, &input)
    }

    #[test]
    fn shell_patterns_match_command_prefixes_in_any_part_of_a_line() {
        let push = "Bash(git push:*)";
        assert!(m(push, "Bash", json!({"command": "git push origin x"})));
        assert!(m(push, "Bash", json!({"command": "cd repo && git push"})));
        assert!(m(push, "Bash", json!({"command": "echo a; GIT_TRACE=1 git push -f"})));
        assert!(m(push, "Bash", json!({"command": "ls\ngit push"})));
        assert!(!m(push, "Bash", json!({"command": "git status"})));
        assert!(!m(push, "Bash", json!({"command": "echo git push"})));
        assert!(!m(push, "Read", json!({"file_path": "git push"})));
        assert!(m("Bash(rm:*)", "Bash", json!({"command": "rm -rf /tmp/x"})));
        assert!(m("Bash", "Bash", json!({"command": "anything"})));
        assert!(m("Bash(npm run *)", "Bash", json!({"command": "npm run a/b"})));
        assert!(!m("Bash(npm run test)", "Bash", json!({"command": "npm run build"})));
    }

    #[test]
    fn path_patterns_are_globs_where_one_star_stays_in_its_directory() {
        let etc = "Write(/etc/**)";
        assert!(m(etc, "Write", json!({"file_path": "/etc/passwd"})));
        assert!(m(etc, "Write", json!({"file_path": "/etc/ssh/sshd_config"})));
        assert!(!m(etc, "Write", json!({"file_path": "/home/etc/x"})));
        assert!(m("Edit(/src/*.rs)", "Edit", json!({"file_path": "/src/main.rs"})));
        assert!(!m("Edit(/src/*.rs)", "Edit", json!({"file_path": "/src/a/main.rs"})));
        assert!(m("mcp__smith__*", "mcp__smith__spawn_task", json!({})));
        assert!(m("spawn_task(*)", "spawn_task", json!({"agent": "x"})));
        assert!(!m("spawn_task", "send_message", json!({})));
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        for bad in ["", "Bash(", "Bash()", "Bash(x) y", "Ba sh", "(x)"] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn answers_fit_their_request_kind() {
        let at = Micros(1);
        let allow = AnswerBody { decision: Some(Decision::Allow), ..Default::default() };
        assert_eq!(allow.clone().answer(RequestKind::Approval, "a", at).unwrap().decision, Decision::Allow);
        assert!(AnswerBody::default().answer(RequestKind::Approval, "a", at).is_err());
        assert!(allow.answer(RequestKind::Input, "a", at).is_err(), "a question needs its answer");
        let text = AnswerBody { answer: Some("blue".into()), ..Default::default() };
        assert_eq!(text.answer(RequestKind::Input, "a", at).unwrap().answer.as_deref(), Some("blue"));
        let edited = AnswerBody { decision: Some(Decision::Deny), input: Some(json!({})), ..Default::default() };
        assert!(edited.answer(RequestKind::Approval, "a", at).is_err());
    }
}
