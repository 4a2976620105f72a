//! The command table is derived from Redis' own `COMMAND` output: this test regenerates it from
//! a real redis-server and fails if the committed `src/command/table/redis70.rs` differs.
//! Run with `SLOTGATE_REGENERATE=1` to rewrite it, and `COMMANDS.md` with it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use redis::Value;

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Okay => "OK".into(),
        other => panic!("not text: {other:?}"),
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => text(other).parse().unwrap(),
    }
}

fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) => a,
        Value::Set(a) => a,
        other => panic!("not an array: {other:?}"),
    }
}

/// Looks a field up in a flat `[k, v, k, v]` array.
fn field<'v>(kv: &'v [Value], name: &str) -> Option<&'v Value> {
    kv.chunks(2).find(|p| text(&p[0]) == name).map(|p| &p[1])
}

fn render_spec(ks: &[Value]) -> String {
    let begin = items(field(ks, "begin_search").unwrap());
    let begin_spec = items(field(begin, "spec").unwrap());
    let begin = match text(field(begin, "type").unwrap()).as_str() {
        "index" => format!(
            "BeginSearch::Index({})",
            int(field(begin_spec, "index").unwrap())
        ),
        "keyword" => format!(
            "BeginSearch::Keyword {{ keyword: {:?}, start_from: {} }}",
            text(field(begin_spec, "keyword").unwrap()),
            int(field(begin_spec, "startfrom").unwrap())
        ),
        _ => "BeginSearch::Unknown".into(),
    };
    let find = items(field(ks, "find_keys").unwrap());
    let find_spec = items(field(find, "spec").unwrap());
    let find = match text(field(find, "type").unwrap()).as_str() {
        "range" => format!(
            "FindKeys::Range {{ last_key: {}, step: {}, limit: {} }}",
            int(field(find_spec, "lastkey").unwrap()),
            int(field(find_spec, "keystep").unwrap()),
            int(field(find_spec, "limit").unwrap())
        ),
        "keynum" => format!(
            "FindKeys::KeyNum {{ key_num_idx: {}, first_key: {}, step: {} }}",
            int(field(find_spec, "keynumidx").unwrap()),
            int(field(find_spec, "firstkey").unwrap()),
            int(field(find_spec, "keystep").unwrap())
        ),
        _ => "FindKeys::Unknown".into(),
    };
    // What the key spec does to its keys, as ACL key patterns by access (`%R~`, `%W~`) read it.
    let mut access: Vec<&str> = Vec::new();
    for f in field(ks, "flags").map(items).unwrap_or(&[]) {
        let f = text(f).to_lowercase();
        let bit = match f.as_str() {
            "access" => "keyspec::READ",
            "insert" | "update" | "delete" => "keyspec::WRITE",
            "not_key" => "keyspec::NOT_KEY",
            "variable_flags" => "keyspec::VARIABLE",
            _ => continue,
        };
        if !access.contains(&bit) {
            access.push(bit);
        }
    }
    let access = if access.is_empty() {
        "0".to_string()
    } else {
        access.join(" | ")
    };
    format!("KeySpec {{ begin: {begin}, find: {find}, access: {access} }}")
}

fn render_command(c: &[Value], indent: &str) -> String {
    let name = text(&c[0]).to_lowercase();
    let arity = int(&c[1]);
    let flags: Vec<String> = items(&c[2])
        .iter()
        .map(text)
        .filter(|f| {
            !matches!(
                f.as_str(),
                "module" | "sentinel" | "only_sentinel" | "module_no_cluster"
            )
        })
        .map(|f| format!("flags::{}", f.to_uppercase()))
        .collect();
    let flags = if flags.is_empty() {
        "0".to_string()
    } else {
        flags.join(" | ")
    };
    let categories: Vec<String> = items(&c[6])
        .iter()
        .map(|v| format!("cat::{}", text(v).trim_start_matches('@').to_uppercase()))
        .collect();
    let categories = if categories.is_empty() {
        "0".to_string()
    } else {
        categories.join(" | ")
    };
    let specs: Vec<String> = items(&c[8])
        .iter()
        .map(|ks| render_spec(items(ks)))
        .collect();
    let mut subs: Vec<&Value> = items(&c[9]).iter().collect();
    subs.sort_by_key(|s| text(&items(s)[0]));
    let subs: Vec<String> = subs
        .iter()
        .map(|s| render_command(items(s), &format!("{indent}    ")))
        .collect();
    let subs = if subs.is_empty() {
        "&[]".to_string()
    } else {
        format!("&[\n{}\n{indent}]", subs.join(",\n"))
    };
    format!(
        "{indent}CommandSpec {{ name: {name:?}, arity: {arity}, flags: {flags}, categories: {categories}, key_specs: &[{}], subcommands: {subs} }}",
        specs.join(", ")
    )
}

#[test]
fn command_table_matches_redis_command_output() {
    let redis = support::Redis::start(&[]);
    let all: Value = redis::cmd("COMMAND").query(&mut redis.conn()).unwrap();
    let mut cmds: Vec<&Value> = items(&all).iter().collect();
    cmds.sort_by_key(|c| text(&items(c)[0]));
    let body: Vec<String> = cmds
        .iter()
        .map(|c| render_command(items(c), "    "))
        .collect();
    let generated = format!(
        "//! Generated from `COMMAND` of redis-server {} by `tests/command_table.rs`; do not edit.\n\
         //! Regenerate with `SLOTGATE_REGENERATE=1 cargo test --test command_table`.\n\n\
         use super::{{BeginSearch, CommandSpec, FindKeys, KeySpec, cat, flags, keyspec}};\n\n\
         pub(super) static COMMANDS: &[CommandSpec] = &[\n{},\n];\n",
        redis.info_field("server", "redis_version").unwrap(),
        body.join(",\n")
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("src/command/table/redis70.rs");
    if std::env::var("SLOTGATE_REGENERATE").is_ok() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(
        committed == generated,
        "src/command/table/redis70.rs is stale: rerun with SLOTGATE_REGENERATE=1"
    );
}

#[test]
fn supported_commands_page_is_current() {
    let page = slotgate::command::Table::redis70().supported_commands_page();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("COMMANDS.md");
    if std::env::var("SLOTGATE_REGENERATE").is_ok() {
        std::fs::write(&path, &page).unwrap();
        return;
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        page,
        "COMMANDS.md is stale: rerun with SLOTGATE_REGENERATE=1"
    );
}
