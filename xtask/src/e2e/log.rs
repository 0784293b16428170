//! The daemons' logs as people read them: weft's JSON log lines rendered as text.

/// A log line for people: weft's JSON lines (`--log-format json`) as `time LEVEL target:
/// message key=value...`; any other line as it is.
pub(crate) fn render_log_line(line: &str) -> String {
    let Ok(serde_json::Value::Object(event)) = serde_json::from_str::<serde_json::Value>(line)
    else {
        return line.to_owned();
    };
    let text = |key: &str| event.get(key).and_then(|v| v.as_str()).unwrap_or("");
    let mut out = format!(
        "{} {:5} {}:",
        text("timestamp"),
        text("level"),
        text("target")
    );
    if let Some(serde_json::Value::Object(fields)) = event.get("fields") {
        if let Some(message) = fields.get("message").and_then(|m| m.as_str()) {
            out.push(' ');
            out.push_str(message);
        }
        for (key, value) in fields.iter().filter(|(k, _)| *k != "message") {
            match value.as_str() {
                Some(s) => out.push_str(&format!(" {key}={s}")),
                None => out.push_str(&format!(" {key}={value}")),
            }
        }
    }
    out
}
