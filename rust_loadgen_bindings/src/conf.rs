//! A read-only re-parse of a user/audit conf with the exact tokenisation of
//! the core's `TestSettings::FromConfig`, to report what the core only writes
//! to its (not yet open) detail log, plus keys the core silently ignores.

/// Key names (the part after `model.scenario.`) that `FromConfig` reads, plus
/// `target_duration`, which the official mlperf.conf carries but no code reads.
pub const KNOWN_KEYS: &[&str] = &[
    "mode",
    "qsl_rng_seed",
    "sample_index_rng_seed",
    "schedule_rng_seed",
    "accuracy_log_probability",
    "test05",
    "test05_qsl_rng_seed",
    "test05_sample_index_rng_seed",
    "test05_schedule_rng_seed",
    "use_token_latencies",
    "ttft_latency",
    "tpot_latency",
    "infer_token_latencies",
    "token_latency_scaling_factor",
    "target_latency_percentile",
    "samples_per_query",
    "target_latency",
    "performance_issue_unique",
    "performance_issue_same",
    "performance_issue_same_index",
    "sample_concatenate_permutation",
    "coalesce_queries",
    "max_async_queries",
    "min_duration",
    "max_duration",
    "min_query_count",
    "max_query_count",
    "performance_sample_count_override",
    "accuracy_sample_count_override",
    "target_qps",
    "print_timestamps",
    "accuracy_log_rng_seed",
    "accuracy_log_sampling_target",
    "target_duration",
];

pub const SCENARIO_TOKENS: &[&str] = &["*", "SingleStream", "MultiStream", "Server", "Offline"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    /// True when the core itself rejects the line (FromConfig returns -EINVAL).
    pub core_error: bool,
    pub message: String,
}

fn parses_fully_as_number(s: &str) -> bool {
    // strtoul(base 0) or strtod consuming the whole token.
    let t = s.trim_start();
    if t.len() != s.len() || s.is_empty() {
        return false;
    }
    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
    let int_ok = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit())
    } else if body.len() > 1 && body.starts_with('0') {
        body.chars().all(|c| ('0'..='7').contains(&c))
    } else {
        !body.is_empty() && body.chars().all(|c| c.is_ascii_digit())
    };
    if int_ok {
        return true;
    }
    let lower = body.to_ascii_lowercase();
    if ["inf", "infinity", "nan"].contains(&lower.as_str()) {
        return true;
    }
    if lower.starts_with("0x") {
        return false; // hex floats: rare; treat as not a plain number
    }
    body.parse::<f64>().is_ok()
}

/// Problems in `text`, in line order. Core errors carry the core's own message.
pub fn check(text: &str) -> Vec<Problem> {
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line_nr = i + 1;
        let mut looking_for = 0;
        let mut key = "";
        let mut keys_done = false;
        let mut errored = false;
        for s in line.split_ascii_whitespace() {
            if s == "#" && looking_for != 2 {
                break;
            }
            if looking_for == 2 {
                if parses_fully_as_number(s) {
                    if !keys_done {
                        keys_done = true;
                        if let Some(m) = key_problem(key) {
                            out.push(Problem { line: line_nr, core_error: false, message: m });
                        } else if let Some(m) = integer_problem(key, s) {
                            out.push(Problem { line: line_nr, core_error: false, message: m });
                        }
                    }
                    continue;
                }
                out.push(Problem {
                    line: line_nr,
                    core_error: true,
                    message: format!("value needs to be integer or double, line={line_nr}"),
                });
                errored = true;
                break;
            }
            if looking_for == 1 && s != "=" {
                out.push(Problem {
                    line: line_nr,
                    core_error: true,
                    message: format!("expected 'key=value', line={line_nr}"),
                });
                errored = true;
                break;
            }
            if looking_for == 0 {
                key = s;
            }
            looking_for += 1;
        }
        if errored {
            continue;
        }
        if looking_for == 1 && !key.starts_with('#') {
            out.push(Problem {
                line: line_nr,
                core_error: false,
                message: format!(
                    "line {line_nr}: '{key}' has no ' = value' (the core needs spaces around '=') and is ignored"
                ),
            });
        } else if looking_for == 2 && !keys_done {
            out.push(Problem {
                line: line_nr,
                core_error: false,
                message: format!("line {line_nr}: '{key} =' has no value and is ignored"),
            });
        }
    }
    out
}

/// Keys the core reads as doubles; all others go through strtoull.
const FLOAT_KEYS: &[&str] = &["target_qps", "target_latency_percentile", "accuracy_log_probability"];

fn is_plain_integer(v: &str) -> bool {
    let b = v.strip_prefix('+').unwrap_or(v);
    if let Some(h) = b.strip_prefix("0x").or_else(|| b.strip_prefix("0X")) {
        return !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit());
    }
    !b.is_empty() && b.chars().all(|c| c.is_ascii_digit())
}

/// strtoull's reading of a token (what the core stores for integer keys).
fn strtoull_prefix(v: &str) -> u64 {
    let b = v.strip_prefix('+').unwrap_or(v);
    let digits: String = b.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().unwrap_or(0)
}

fn integer_problem(key: &str, value: &str) -> Option<String> {
    let parts: Vec<&str> = key.rsplitn(3, '.').collect();
    let (name, scenario) = (parts[0], parts[1]);
    let float_ok = FLOAT_KEYS.contains(&name)
        || (name == "target_latency" && (scenario == "SingleStream" || scenario == "MultiStream"));
    if float_ok || is_plain_integer(value) {
        return None;
    }
    if let Some(neg) = value.strip_prefix('-') {
        return Some(format!(
            "value '{value}' of integer key '{key}' is read by the LoadGen with strtoull, which wraps \
             it to 2^64-{neg}"
        ));
    }
    Some(format!(
        "value '{value}' of integer key '{key}' is read by the LoadGen as {} (strtoull)",
        strtoull_prefix(value)
    ))
}

fn key_problem(key: &str) -> Option<String> {
    let parts: Vec<&str> = key.rsplitn(3, '.').collect();
    if parts.len() != 3 {
        return Some(format!("unknown key '{key}': expected model.scenario.key"));
    }
    let (name, scenario) = (parts[0], parts[1]);
    if !SCENARIO_TOKENS.contains(&scenario) {
        return Some(format!(
            "unknown key '{key}': scenario '{scenario}' is not one of *, SingleStream, MultiStream, Server, Offline"
        ));
    }
    if !KNOWN_KEYS.contains(&name) {
        return Some(format!("unknown key '{key}': the LoadGen does not read '{name}' and ignores it"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_messages_and_unknown_keys() {
        let p = check("*.Offline.target_qps = 12\nretinanet.Offline.min_duration = abc\nfoo.bar\n*.*.bogus_key = 1\n# c\n*.Server.target_qps = 1 # trailing\nx.y.z=1\n");
        let msgs: Vec<&str> = p.iter().map(|p| p.message.as_str()).collect();
        assert!(msgs.contains(&"value needs to be integer or double, line=2"), "{msgs:?}");
        assert!(msgs.iter().any(|m| m.contains("bogus_key")));
        assert!(msgs.contains(&"value needs to be integer or double, line=6"));
        assert!(msgs.iter().any(|m| m.contains("line 7")));
        assert!(!msgs.iter().any(|m| m.contains("line=1")));
        assert!(check("a.Offline.target_qps = 0x10\n*.*.min_duration = 1000\n").is_empty());
        assert_eq!(check("*.*.min_duration = 1e3\n").len(), 1);
        assert_eq!(check("a.b.c = = 1").len(), 1);
    }
}
