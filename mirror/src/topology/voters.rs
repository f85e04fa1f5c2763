//! The controller voters of a cluster, `["ID@HOST:PORT", …]`: one form for a node's config
//! (`controllers`, `--controllers`) and a topology's `[[clusters]] controllers`, read by one
//! parser so both accept and refuse the same lists with the same words.

use std::collections::BTreeMap;

/// Why a voter list cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoterError {
    #[error("controller {0:?} is not ID@HOST:PORT (for instance 1@10.0.0.1:7400)")]
    Form(String),
    #[error("controller {entry:?}: {id:?} is not a node id")]
    Id { entry: String, id: String },
    #[error("controller {entry:?}: {address:?} is not HOST:PORT")]
    Address { entry: String, address: String },
    #[error("controller {0} is named twice in controllers")]
    Twice(u32),
    #[error("{0} controllers named; a quorum has 1, 3 or 5 voters (an even count survives no more failures than one fewer)")]
    Count(usize),
}

/// The voters by node id, at the address each entry gives, and every problem found (usable
/// only without problems; an empty list is: a node alone is a quorum of itself). The sound
/// entries are there even beside problems, so a checker can go on checking them.
pub fn parse_voters(entries: &[String]) -> (BTreeMap<u32, String>, Vec<VoterError>) {
    let mut voters = BTreeMap::new();
    let mut problems = Vec::new();
    for entry in entries {
        let Some((id, address)) = entry.split_once('@') else {
            problems.push(VoterError::Form(entry.clone()));
            continue;
        };
        let Ok(id) = id.trim().parse::<u32>() else {
            problems.push(VoterError::Id {
                entry: entry.clone(),
                id: id.to_string(),
            });
            continue;
        };
        let address = address.trim();
        if address
            .rsplit_once(':')
            .is_none_or(|(host, _)| host.is_empty())
        {
            problems.push(VoterError::Address {
                entry: entry.clone(),
                address: address.to_string(),
            });
            continue;
        }
        if voters.insert(id, address.to_string()).is_some() {
            problems.push(VoterError::Twice(id));
        }
    }
    if !matches!(entries.len(), 0 | 1 | 3 | 5) {
        problems.push(VoterError::Count(entries.len()));
    }
    (voters, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_sound_list_parses_and_every_problem_is_named() {
        let (ok, none) = parse_voters(&list(&["1@a:1", "2@b:2", "3@c:3"]));
        assert_eq!(ok.get(&2).map(String::as_str), Some("b:2"));
        assert!(none.is_empty(), "{none:?}");
        assert_eq!(parse_voters(&[]), (BTreeMap::new(), Vec::new()));
        let (sound, bad) = parse_voters(&list(&["1-a:1", "x@b:2", "3@c:3"]));
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert_eq!(sound.keys().collect::<Vec<_>>(), vec![&3]);
        let (_, twice) = parse_voters(&list(&["1@a:1", "1@a:1"]));
        assert_eq!(twice, vec![VoterError::Twice(1), VoterError::Count(2)]);
    }
}
