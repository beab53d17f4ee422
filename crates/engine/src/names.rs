//! Container ids (64 random hex digits, as docker's) and names (`--name`, or a
//! generated `adjective_noun` as docker makes them).

use crate::error::{Error, Result};

const ADJECTIVES: &[&str] = &[
    "agile", "bold", "brave", "bright", "calm", "clever", "cool", "crisp", "eager", "fair", "fond", "gentle", "happy",
    "keen", "kind", "lively", "lucid", "merry", "modest", "neat", "nimble", "noble", "plucky", "proud", "quick",
    "quiet", "serene", "sharp", "steady", "sunny", "swift", "tidy", "vivid", "warm", "wise", "zesty",
];

const NOUNS: &[&str] = &[
    "albatross",
    "badger",
    "beaver",
    "bison",
    "crane",
    "dolphin",
    "eagle",
    "falcon",
    "ferret",
    "gecko",
    "heron",
    "ibis",
    "jackal",
    "kestrel",
    "koala",
    "lemur",
    "lynx",
    "marmot",
    "narwhal",
    "ocelot",
    "otter",
    "panda",
    "pelican",
    "puffin",
    "quail",
    "raven",
    "salmon",
    "seal",
    "swan",
    "tapir",
    "toucan",
    "walrus",
    "wombat",
    "yak",
];

/// A new container id: 32 random bytes from getrandom(2), as 64 hex digits.
///
/// Errors: [`Error::Io`] when the kernel gives no randomness.
pub fn new_id() -> Result<String> {
    let mut b = [0u8; 32];
    let mut filled = 0;
    while filled < b.len() {
        filled += rustix::rand::getrandom(&mut b[filled..], rustix::rand::GetRandomFlags::empty())
            .map_err(|e| Error::io("getrandom", "", e.into()))?;
    }
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A free generated name: `adjective_noun`, with a number appended when all of a
/// random start's neighbours are taken. `free` says whether a name is unused.
pub fn generate(free: impl Fn(&str) -> bool) -> String {
    let mut b = [0u8; 2];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    let (a, n) = (b[0] as usize % ADJECTIVES.len(), b[1] as usize % NOUNS.len());
    for i in 0.. {
        let adj = ADJECTIVES[(a + i) % ADJECTIVES.len()];
        let noun = NOUNS[(n + i / ADJECTIVES.len()) % NOUNS.len()];
        let name = if i < ADJECTIVES.len() * NOUNS.len() {
            format!("{adj}_{noun}")
        } else {
            format!("{adj}_{noun}{i}")
        };
        if free(&name) {
            return name;
        }
    }
    unreachable!("the loop above only ends by returning")
}

/// Checks a user-given name: docker's rule `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 128.
///
/// Errors: [`Error::BadInput`].
pub fn check(name: &str) -> Result<()> {
    let ok = name.len() <= 128
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::BadInput(format!(
            "invalid container name {name:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128 characters"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        let a = new_id().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, new_id().unwrap());
        assert!(check("web-1.a_b").is_ok());
        for bad in ["", "-x", "a/b", "a b", &"x".repeat(129)] {
            assert!(check(bad).is_err(), "{bad}");
        }
        let taken = generate(|_| true);
        assert!(generate(|n| n != taken).contains('_'));
    }
}
