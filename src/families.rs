//! Key families: keys an application uses together (in one transaction, one blocking pop over
//! several lists, one script), kept in one slot of a cluster without the application knowing.
//! A key in a family is stored under its name with the family's hash tag in front
//! (`celery3` -> `{celery}celery3`); the session rewrites request keys with [`Families::stored`]
//! and reply key names back with [`Families::restore`].
//!
//! This module decides which keys belong to which family and how their stored names read: pure
//! functions over the configured rules and the presets for well-known libraries. It never
//! touches a frame or a connection, and [`Families::restore`] never changes a name that
//! [`Families::stored`] could not have produced.

use thiserror::Error;

/// The presets: the names of the keys each library uses together, by default.
///
/// - `celery`: Celery 5 with kombu's Redis transport and its defaults. `celery` is the default
///   queue (a list) and `celery\x06\x16<n>` its priority lists (kombu's `sep`): a worker pops
///   them all in one `BRPOP` and counts them in one `MULTI`; `<worker>.celery.pidbox` and
///   `<id>.reply.celery.pidbox` (with their priority lists) are the remote-control queues,
///   `celeryev.<id>` the event queues of monitors (Flower); `_kombu.binding*` are the
///   exchanges' bindings (sets); `unacked`, `unacked_index` and `unacked_mutex` hold messages
///   being worked on, restored to their queue in one transaction. Results
///   (`celery-task-meta-*`) are read one at a time and stay spread out. Queues of your own go
///   into the same family (`keys = ["emails", "emails\u0006\u0016*"]` beside `preset`).
/// - `rq`: RQ (`rq:*`): its enqueue writes the job's hash, the queue's list and the registries in
///   one transaction, so every key of RQ is in the family.
pub const PRESETS: &[(&str, &[&str])] = &[
    (
        "celery",
        &[
            "celery",
            "celery\x06\x16*",
            "*.celery.pidbox",
            "*.celery.pidbox\x06\x16*",
            "celeryev.*",
            "_kombu.binding*",
            "unacked",
            "unacked_index",
            "unacked_mutex",
        ],
    ),
    ("rq", &["rq:*"]),
];

/// One family as configured: `[[colocate]] name = "..." preset = "..." keys = [...]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FamilySpec {
    pub name: Option<String>,
    pub preset: Option<String>,
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FamilyError {
    #[error("unknown preset {0:?} (known: celery, rq)")]
    UnknownPreset(String),
    #[error("a family needs a name or a preset")]
    NoName,
    #[error("family {0:?} has no keys")]
    NoKeys(String),
    #[error("family name {0:?} must be non-empty, without braces, '*', '?', '[', ']' or '\\'")]
    BadName(String),
    #[error("family {0:?} is configured twice")]
    Twice(String),
    #[error("family {0:?} has an empty key pattern")]
    EmptyPattern(String),
}

/// A key pattern: a name, a prefix (`abc*`), or a glob with `*` and `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
    Glob(Vec<u8>),
}

impl Pattern {
    fn new(p: &[u8]) -> Pattern {
        let wild = |b: &u8| *b == b'*' || *b == b'?';
        match p.split_last() {
            _ if !p.iter().any(wild) => Pattern::Exact(p.to_vec()),
            Some((b'*', head)) if !head.iter().any(wild) => Pattern::Prefix(head.to_vec()),
            _ => Pattern::Glob(p.to_vec()),
        }
    }

    fn matches(&self, key: &[u8]) -> bool {
        match self {
            Pattern::Exact(p) => key == p.as_slice(),
            Pattern::Prefix(p) => key.starts_with(p),
            Pattern::Glob(p) => glob(p, key),
        }
    }
}

/// `*` (any run of bytes) and `?` (one byte); every other byte stands for itself.
fn glob(pattern: &[u8], key: &[u8]) -> bool {
    let (mut p, mut k) = (0, 0);
    // Where the last `*` was, and the key position it is trying to cover up to.
    let mut star: Option<(usize, usize)> = None;
    while let Some(&b) = key.get(k) {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, k));
                p += 1;
            }
            Some(&c) if c == b'?' || c == b => {
                p += 1;
                k += 1;
            }
            _ => match star {
                Some((sp, sk)) => {
                    star = Some((sp, sk + 1));
                    p = sp + 1;
                    k = sk + 1;
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .unwrap_or_default()
        .iter()
        .all(|&c| c == b'*')
}

/// One family: its name, its hash tag (`{name}`) and its key patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    name: String,
    tag: Vec<u8>,
    patterns: Vec<Pattern>,
}

impl Family {
    pub fn name(&self) -> &str {
        &self.name
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.patterns.iter().any(|p| p.matches(key))
    }
}

/// Every configured family, in the order configured (the first that holds a key is its family).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Families {
    families: Vec<Family>,
}

impl Families {
    /// Builds the families from their specs, presets expanded; `None` when there are none.
    pub fn compile(specs: &[FamilySpec]) -> Result<Option<Families>, FamilyError> {
        let mut families: Vec<Family> = Vec::with_capacity(specs.len());
        for spec in specs {
            let mut keys: Vec<String> = Vec::new();
            if let Some(preset) = &spec.preset {
                let (_, preset_keys) = PRESETS
                    .iter()
                    .find(|(n, _)| n == preset)
                    .ok_or_else(|| FamilyError::UnknownPreset(preset.clone()))?;
                keys.extend(preset_keys.iter().map(|k| (*k).to_string()));
            }
            keys.extend(spec.keys.iter().cloned());
            let name = spec
                .name
                .clone()
                .or_else(|| spec.preset.clone())
                .ok_or(FamilyError::NoName)?;
            // Braces would end the tag; glob characters would be read as such in patterns.
            if name.is_empty() || name.contains(['{', '}', '*', '?', '[', ']', '\\']) {
                return Err(FamilyError::BadName(name));
            }
            if families.iter().any(|f| f.name == name) {
                return Err(FamilyError::Twice(name));
            }
            if keys.is_empty() {
                return Err(FamilyError::NoKeys(name));
            }
            if keys.iter().any(|k| k.is_empty()) {
                return Err(FamilyError::EmptyPattern(name));
            }
            families.push(Family {
                tag: format!("{{{name}}}").into_bytes(),
                patterns: keys.iter().map(|k| Pattern::new(k.as_bytes())).collect(),
                name,
            });
        }
        Ok((!families.is_empty()).then_some(Families { families }))
    }

    /// Every family's name and key patterns as configured (presets expanded), in order.
    pub fn describe(&self) -> Vec<(String, Vec<String>)> {
        self.families
            .iter()
            .map(|f| {
                let keys = f
                    .patterns
                    .iter()
                    .map(|p| match p {
                        Pattern::Exact(k) | Pattern::Glob(k) => String::from_utf8_lossy(k).into(),
                        Pattern::Prefix(k) => format!("{}*", String::from_utf8_lossy(k)),
                    })
                    .collect();
                (f.name.clone(), keys)
            })
            .collect()
    }

    /// The tags of every family (`{name}`), in order.
    pub fn tags(&self) -> impl Iterator<Item = &[u8]> {
        self.families.iter().map(|f| f.tag.as_slice())
    }

    /// The family that holds `key`, if any.
    pub fn family_of(&self, key: &[u8]) -> Option<&Family> {
        self.families.iter().find(|f| f.contains(key))
    }

    /// The name `key` is stored under: its family's tag in front; `None` for a key in no family.
    pub fn stored(&self, key: &[u8]) -> Option<Vec<u8>> {
        let f = self.family_of(key)?;
        let mut name = Vec::with_capacity(f.tag.len() + key.len());
        name.extend_from_slice(&f.tag);
        name.extend_from_slice(key);
        Some(name)
    }

    /// A SORT `BY` or `GET` pattern (`weight_*`, `job:*->status`) as stored: the tag of the
    /// family in front, when every key the pattern can form (its `*` replaced by an element)
    /// is that family's; `None` otherwise (`#`, a pattern without `*`, which reads no key, or
    /// keys that may be in no family or in another), and the pattern is sent as it is. Redis
    /// forms `prefix<element>postfix`, with `->field` after the `*` naming a hash field.
    pub fn stored_pattern(&self, pattern: &[u8]) -> Option<Vec<u8>> {
        let star = pattern.iter().position(|&b| b == b'*')?;
        let f = self.holding_every(pattern.get(..star)?)?;
        Some([f.tag.as_slice(), pattern].concat())
    }

    /// A glob over key names (Redis' syntax, as a keyspace notification pattern names keys)
    /// as stored: a plain name as [`Self::stored`] stores it, a glob with the tag of the family
    /// in front when every key it can match is that family's; `None` otherwise.
    pub fn stored_glob(&self, glob: &[u8]) -> Option<Vec<u8>> {
        let Some(at) = glob
            .iter()
            .position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
        else {
            return self.stored(glob);
        };
        let f = self.holding_every(glob.get(..at)?)?;
        Some([f.tag.as_slice(), glob].concat())
    }

    /// The application's glob for a glob [`Self::stored_glob`] made; `None` for any other.
    pub fn restore_glob<'a>(&self, stored: &'a [u8]) -> Option<&'a [u8]> {
        if stored.first() != Some(&b'{') {
            return None;
        }
        self.families.iter().find_map(|f| {
            let rest = stored.strip_prefix(f.tag.as_slice())?;
            (self.stored_glob(rest).as_deref() == Some(stored)).then_some(rest)
        })
    }

    /// The family that holds every key starting with `literal`: one of its prefixes starts it,
    /// and no family before it (the first that holds a key is its family) may hold one.
    fn holding_every(&self, literal: &[u8]) -> Option<&Family> {
        let at = self.families.iter().position(|f| {
            f.patterns
                .iter()
                .any(|p| matches!(p, Pattern::Prefix(q) if literal.starts_with(q)))
        })?;
        let claims = |p: &Pattern| match p {
            Pattern::Exact(x) => x.starts_with(literal),
            Pattern::Prefix(q) => q.starts_with(literal) || literal.starts_with(q),
            Pattern::Glob(_) => true,
        };
        let earlier = self.families.get(..at)?;
        if earlier.iter().any(|g| g.patterns.iter().any(claims)) {
            return None;
        }
        self.families.get(at)
    }

    /// The application's name for a stored name: the tag taken off when the rest is a key its
    /// family holds (a name [`Self::stored`] made); `None` for any other name, left as it is.
    pub fn restore<'a>(&self, stored: &'a [u8]) -> Option<&'a [u8]> {
        if stored.first() != Some(&b'{') {
            return None;
        }
        self.families.iter().find_map(|f| {
            let rest = stored.strip_prefix(f.tag.as_slice())?;
            // The first family that holds `rest` is the one `stored` would have chosen.
            (self.family_of(rest).map(|g| g.name.as_str()) == Some(f.name.as_str())).then_some(rest)
        })
    }
}

/// Where a command's reply carries key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyNames {
    /// The first element of an array (BLPOP, BZPOPMIN, BLMPOP, LMPOP ...).
    First,
    /// Every element of an array (KEYS).
    All,
    /// The second element of SCAN's reply, an array of names.
    Scan,
    /// The reply itself (RANDOMKEY).
    One,
    /// The stream names of XREAD and XREADGROUP: an array of `[name, entries]` pairs (RESP2)
    /// or a map from name to entries (RESP3).
    Streams,
    /// A script's or function's reply (EVAL, FCALL ...): it names no key, but Redis' refusal
    /// of a key the script built itself (which slotgate cannot rename into its family) is
    /// told why.
    Script,
}

/// Which names the reply of the command called `name` carries, if any.
pub fn reply_names(name: &str) -> Option<ReplyNames> {
    match name {
        "blpop" | "brpop" | "bzpopmin" | "bzpopmax" | "blmpop" | "bzmpop" | "lmpop" | "zmpop" => {
            Some(ReplyNames::First)
        }
        "keys" => Some(ReplyNames::All),
        "scan" => Some(ReplyNames::Scan),
        "randomkey" => Some(ReplyNames::One),
        "xread" | "xreadgroup" => Some(ReplyNames::Streams),
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" => {
            Some(ReplyNames::Script)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_store_a_glob_only_when_every_key_it_matches_is_in_one_family() {
        let f = families(&[("rq", Some("rq"), &[]), ("celery", Some("celery"), &[])]);
        for (glob, stored) in [
            (&b"rq:*"[..], &b"{rq}rq:*"[..]),
            (b"rq:job:?", b"{rq}rq:job:?"),
            (b"rq:[ab]*", b"{rq}rq:[ab]*"),
            (b"celery", b"{celery}celery"),
            (b"_kombu.binding.x*", b"{celery}_kombu.binding.x*"),
        ] {
            assert_eq!(f.stored_glob(glob).as_deref(), Some(stored), "{glob:?}");
            assert_eq!(f.restore_glob(stored), Some(glob), "{stored:?}");
        }
        // Globs that may match keys of no family: as they are, and never restored.
        for glob in [&b"*"[..], b"r*", b"celery*", b"x", b"[r]q:*"] {
            assert_eq!(f.stored_glob(glob), None, "{glob:?}");
        }
        assert_eq!(f.restore_glob(b"{rq}x*"), None);
        assert_eq!(f.restore_glob(b"rq:*"), None);
    }

    #[test]
    fn should_store_a_sort_pattern_only_when_every_key_it_forms_is_in_one_family() {
        let f = families(&[("jobs", None, &["job:*", "lock"]), ("rq", Some("rq"), &[])]);
        assert_eq!(
            f.stored_pattern(b"rq:job:*->status").as_deref(),
            Some(&b"{rq}rq:job:*->status"[..])
        );
        assert_eq!(
            f.stored_pattern(b"job:w_*").as_deref(),
            Some(&b"{jobs}job:w_*"[..])
        );
        // `#`, a fixed key (no `*`), keys outside any family, or a prefix shorter than the
        // family's: sent as they are.
        for p in [&b"#"[..], b"rq:job:1", b"weight_*", b"r*", b"jo*"] {
            assert_eq!(f.stored_pattern(p), None, "{p:?}");
        }
        // An earlier family that may hold some of the formed keys: not rewritten.
        let g = families(&[("a", None, &["rq:job:7"]), ("rq", Some("rq"), &[])]);
        assert_eq!(g.stored_pattern(b"rq:job:*"), None);
        assert_eq!(
            g.stored_pattern(b"rq:queue:*").as_deref(),
            Some(&b"{rq}rq:queue:*"[..])
        );
    }

    fn families(specs: &[(&str, Option<&str>, &[&str])]) -> Families {
        let specs: Vec<FamilySpec> = specs
            .iter()
            .map(|(name, preset, keys)| FamilySpec {
                name: (!name.is_empty()).then(|| (*name).to_string()),
                preset: preset.map(str::to_string),
                keys: keys.iter().map(|k| (*k).to_string()).collect(),
            })
            .collect();
        Families::compile(&specs).unwrap().unwrap()
    }

    #[test]
    fn should_match_names_prefixes_and_globs() {
        assert!(Pattern::new(b"celery").matches(b"celery"));
        assert!(!Pattern::new(b"celery").matches(b"celery3"));
        assert!(Pattern::new(b"rq:*").matches(b"rq:queue:default"));
        assert!(Pattern::new(b"rq:*").matches(b"rq:"));
        assert!(!Pattern::new(b"rq:*").matches(b"rqx"));
        assert!(Pattern::new(b"job:*:lock").matches(b"job:42:lock"));
        assert!(!Pattern::new(b"job:*:lock").matches(b"job:42:locks"));
        assert!(Pattern::new(b"a?c").matches(b"abc"));
        assert!(!Pattern::new(b"a?c").matches(b"ac"));
        assert!(Pattern::new(b"*x*y").matches(b"axbxcy"));
        assert!(Pattern::new(b"**").matches(b""));
    }

    #[test]
    fn should_expand_a_preset_and_add_keys_to_it() {
        let f = families(&[("", Some("celery"), &["emails", "emails\x06\x16*"])]);
        for key in [
            &b"celery"[..],
            b"celery\x06\x163",
            b"_kombu.binding.celery",
            b"unacked",
            b"unacked_index",
            b"emails",
            b"emails\x06\x169",
        ] {
            assert_eq!(
                f.family_of(key).map(Family::name),
                Some("celery"),
                "{key:?}"
            );
        }
        for key in [
            &b"celery-task-meta-1"[..],
            b"celery3",
            b"unacked2",
            b"other",
        ] {
            assert!(f.family_of(key).is_none(), "{key:?}");
        }
    }

    #[test]
    fn should_store_a_family_key_under_its_tag_and_no_other_key() {
        let f = families(&[("", Some("rq"), &[]), ("celery", Some("celery"), &[])]);
        assert_eq!(
            f.stored(b"rq:queue:default").unwrap(),
            b"{rq}rq:queue:default"
        );
        assert_eq!(
            f.stored(b"celery\x06\x163").unwrap(),
            b"{celery}celery\x06\x163"
        );
        assert_eq!(f.stored(b"plain"), None);
    }

    #[test]
    fn should_restore_only_names_it_could_have_stored() {
        let f = families(&[("", Some("rq"), &[]), ("", Some("celery"), &[])]);
        assert_eq!(f.restore(b"{rq}rq:job:1"), Some(&b"rq:job:1"[..]));
        assert_eq!(f.restore(b"{celery}unacked"), Some(&b"unacked"[..]));
        // Not a family key after the tag, another family's key, no tag, another tag.
        assert_eq!(f.restore(b"{rq}other"), None);
        assert_eq!(f.restore(b"{rq}celery"), None);
        assert_eq!(f.restore(b"rq:job:1"), None);
        assert_eq!(f.restore(b"{bull}rq:job:1"), None);
        for key in [&b"rq:x"[..], b"celery", b"_kombu.binding.q"] {
            assert_eq!(f.restore(&f.stored(key).unwrap()), Some(key));
        }
    }

    #[test]
    fn should_give_an_overlapping_key_to_the_first_family() {
        let f = families(&[("a", None, &["job:*"]), ("b", None, &["job:1*"])]);
        assert_eq!(f.family_of(b"job:12").map(Family::name), Some("a"));
        assert_eq!(f.restore(b"{b}job:12"), None, "b never stores job:12");
    }

    #[test]
    fn should_refuse_bad_specs() {
        let spec = |name: Option<&str>, preset: Option<&str>, keys: &[&str]| FamilySpec {
            name: name.map(str::to_string),
            preset: preset.map(str::to_string),
            keys: keys.iter().map(|k| (*k).to_string()).collect(),
        };
        let err = |specs: &[FamilySpec]| Families::compile(specs).unwrap_err();
        assert_eq!(
            err(&[spec(None, Some("sidekiq"), &[])]),
            FamilyError::UnknownPreset("sidekiq".into())
        );
        assert_eq!(err(&[spec(None, None, &["a"])]), FamilyError::NoName);
        assert_eq!(
            err(&[spec(Some("x"), None, &[])]),
            FamilyError::NoKeys("x".into())
        );
        assert_eq!(
            err(&[spec(Some("{x}"), None, &["a"])]),
            FamilyError::BadName("{x}".into())
        );
        assert_eq!(
            err(&[spec(Some(""), None, &["a"])]),
            FamilyError::BadName("".into())
        );
        assert_eq!(
            err(&[spec(None, Some("rq"), &[]), spec(Some("rq"), None, &["b"])]),
            FamilyError::Twice("rq".into())
        );
        assert_eq!(
            err(&[spec(Some("x"), None, &[""])]),
            FamilyError::EmptyPattern("x".into())
        );
        assert_eq!(Families::compile(&[]), Ok(None));
    }
}
