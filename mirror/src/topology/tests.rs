//! One test per class of mistake: each must be caught and named.

use std::path::Path;

use super::*;

const TWO_REGIONS: &str = r#"
name = "t"
[defaults]
partitions = 2
[[clusters]]
name = "east"
nodes = [{ id = 1, address = "127.0.0.1:7001", admin = "127.0.0.1:9001" }]
[[clusters]]
name = "west"
nodes = [{ id = 1, address = "127.0.0.1:7002", admin = "127.0.0.1:9002" }]
[[topics]]
name = "orders"
origins = ["east"]
[[flows]]
source = "east"
target = "west"
topics = "orders"
"#;

fn problems(text: &str) -> Vec<String> {
    let t = parse(Path::new("t.toml"), text).expect("parses");
    match check(&t, None) {
        Ok(notes) => panic!("expected problems, got notes {notes:?}"),
        Err(p) => p.iter().map(|p| p.to_string()).collect(),
    }
}

fn notes(text: &str) -> Vec<String> {
    let t = parse(Path::new("t.toml"), text).expect("parses");
    check(&t, None).unwrap_or_else(|p| panic!("unexpected problems {p:?}"))
}

fn one_problem_containing(text: &str, needles: &[&str]) {
    let found = problems(text);
    assert!(
        found.iter().any(|p| needles.iter().all(|n| p.contains(n))),
        "no problem names {needles:?}: {found:#?}"
    );
}

#[test]
fn a_sound_topology_passes_with_a_note_on_certificates() {
    let n = notes(TWO_REGIONS);
    assert!(n.iter().any(|n| n.contains("topology up")), "{n:?}");
}

#[test]
fn syntax_errors_carry_line_and_column() {
    let text = TWO_REGIONS.replace("partitions = 2", "partitions = = 2");
    let e = parse(Path::new("t.toml"), &text).unwrap_err().to_string();
    assert!(e.contains("line 4") && e.contains("column"), "{e}");
    let text = TWO_REGIONS.replace("partitions = 2", "partitons = 2");
    let e = parse(Path::new("t.toml"), &text).unwrap_err().to_string();
    assert!(e.contains("partitons") && e.contains("line 4"), "{e}");
}

#[test]
fn a_flow_naming_an_unknown_cluster_is_refused() {
    let text = TWO_REGIONS.replace("target = \"west\"", "target = \"wset\"");
    one_problem_containing(
        &text,
        &["flow east-to-wset", "\"wset\"", "clusters: east, west"],
    );
}

#[test]
fn duplicate_ids_addresses_ports_and_dirs_are_refused() {
    let text = TWO_REGIONS.replace("127.0.0.1:7002", "127.0.0.1:7001");
    one_problem_containing(
        &text,
        &[
            "cluster west, node 1",
            "127.0.0.1:7001",
            "cluster east, node 1 address",
        ],
    );
    let text = TWO_REGIONS.replace("127.0.0.1:9002", "0.0.0.0:9001");
    one_problem_containing(&text, &["cluster west, node 1", "admin"]);
    let text = TWO_REGIONS.replace(
        r#"nodes = [{ id = 1, address = "127.0.0.1:7002", admin = "127.0.0.1:9002" }]"#,
        r#"nodes = [{ id = 1, address = "127.0.0.1:7002", admin = "127.0.0.1:9002" }, { id = 1, address = "127.0.0.1:7003", admin = "127.0.0.1:9003" }]"#,
    );
    one_problem_containing(&text, &["cluster west, node 1", "node id used twice"]);
    let text = TWO_REGIONS.replace(
        r#"admin = "127.0.0.1:9002" }"#,
        r#"admin = "127.0.0.1:9002", data_dir = "east-1" }"#,
    );
    one_problem_containing(&text, &["cluster west, node 1", "data_dir \"east-1\""]);
}

#[test]
fn a_flow_from_a_cluster_to_itself_is_refused() {
    let text = TWO_REGIONS.replace("target = \"west\"", "target = \"east\"");
    one_problem_containing(&text, &["flow east-to-east", "into itself"]);
}

const RING: &str = r#"
name = "ring"
[[clusters]]
name = "a"
nodes = [{ id = 1, address = "127.0.0.1:7001", admin = "127.0.0.1:9001" }]
[[clusters]]
name = "b"
nodes = [{ id = 1, address = "127.0.0.1:7002", admin = "127.0.0.1:9002" }]
[[clusters]]
name = "c"
nodes = [{ id = 1, address = "127.0.0.1:7003", admin = "127.0.0.1:9003" }]
[[topics]]
name = "orders"
origins = ["a", "b", "c"]
[[flows]]
source = "a"
target = "b"
naming = "NAMING"
[[flows]]
source = "b"
target = "c"
naming = "NAMING"
[[flows]]
source = "c"
target = "a"
naming = "NAMING"
"#;

#[test]
fn an_identity_cycle_is_allowed_and_explained() {
    let n = notes(&RING.replace("NAMING", "identity"));
    assert!(
        n.iter()
            .any(|n| n.contains("cycle of identity-mode flows") && n.contains("provenance")),
        "{n:?}"
    );
}

#[test]
fn a_prefix_cycle_that_would_nest_names_is_refused() {
    one_problem_containing(
        &RING.replace("NAMING", "prefix"),
        &["cycle of prefix-mode flows", "c.b.a.orders", "identity"],
    );
}

#[test]
fn a_prefix_pair_is_allowed_since_mirror_topics_of_the_target_are_never_copied_back() {
    let text = format!(
        "{TWO_REGIONS}\n[[flows]]\nsource = \"west\"\ntarget = \"east\"\n[[topics]]\nname = \"stock\"\norigins = [\"west\"]\n"
    );
    notes(&text);
}

#[test]
fn a_topic_colliding_with_a_mirror_topic_is_refused() {
    let text = format!("{TWO_REGIONS}\n[[topics]]\nname = \"east.orders\"\norigins = [\"west\"]\n");
    one_problem_containing(&text, &["flow east-to-west", "\"east.orders\"", "collides"]);
}

#[test]
fn missing_certificate_files_are_named_unless_up_may_make_them() {
    let dir = tempfile_dir();
    let strict = TWO_REGIONS.replace(
        "name = \"t\"",
        "name = \"t\"\n[security]\ncerts_dir = \"c\"\ngenerate = false",
    );
    let t = parse(Path::new("t.toml"), &strict).unwrap();
    let found = check(&t, Some(&dir)).unwrap_err();
    let text = found[0].to_string();
    assert!(
        text.starts_with("security") && text.contains("east-1.crt") && text.contains("admin.key"),
        "{text}"
    );
    let lenient = strict.replace("generate = false", "generate = true");
    let t = parse(Path::new("t.toml"), &lenient).unwrap();
    let notes = check(&t, Some(&dir)).unwrap();
    assert!(notes.iter().any(|n| n.contains("west-1.key")), "{notes:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_regexes_and_unknown_origins_name_their_element() {
    let text = TWO_REGIONS.replace("topics = \"orders\"", "topics = \"(orders\"");
    one_problem_containing(
        &text,
        &["flow east-to-west", "topics", "regular expression"],
    );
    let text = TWO_REGIONS.replace("origins = [\"east\"]", "origins = [\"north\"]");
    one_problem_containing(&text, &["topic orders", "\"north\""]);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("strait-topology-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_malformed_acl_is_named() {
    let raw = r#"
name = "t"
[security]
authorization = true
acls = [{ principal = "app", operation = "read", resource = "topic" }]
[[clusters]]
name = "east"
nodes = [{ id = 1, address = "127.0.0.1:7000", admin = "127.0.0.1:9000" }]
"#;
    let t: Topology = toml::from_str(raw).unwrap();
    let problems = check(&t, None).unwrap_err();
    assert!(
        problems.iter().any(
            |p| p.element.starts_with("security.acls[0]") && p.message.contains("needs a name")
        ),
        "{problems:?}"
    );
}

#[test]
fn controllers_name_the_clusters_own_nodes_at_their_addresses() {
    let with = |entries: &str| {
        TWO_REGIONS.replace(
            "nodes = [{ id = 1, address = \"127.0.0.1:7001\", admin = \"127.0.0.1:9001\" }]",
            &format!(
                "nodes = [{{ id = 1, address = \"127.0.0.1:7001\", admin = \"127.0.0.1:9001\", rack = \"a\" }}]\ncontrollers = [{entries}]"
            ),
        )
    };
    let sound = with("\"1@127.0.0.1:7001\"");
    assert!(sound.contains("controllers"), "{sound}");
    notes(&sound);
    one_problem_containing(
        &with("\"1-127.0.0.1:7001\""),
        &["cluster east", "ID@HOST:PORT"],
    );
    one_problem_containing(
        &with("\"2@127.0.0.1:7001\""),
        &["node 2", "does not declare"],
    );
    one_problem_containing(
        &with("\"1@127.0.0.1:7009\""),
        &["listens on 127.0.0.1:7001"],
    );
    one_problem_containing(
        &with("\"1@127.0.0.1:7001\", \"1@127.0.0.1:7001\""),
        &["named twice"],
    );
    one_problem_containing(
        &with("\"1@127.0.0.1:7001\", \"1@127.0.0.1:7001\""),
        &["2 controllers named", "1, 3 or 5"],
    );
}
