//! argon2id hashing with memory that is reused, not reallocated.
//!
//! Each hash needs `m` KiB of working memory (19 MiB at the default cost).
//! Allocating it per hash, as `PasswordHasher::hash_password` does, made the
//! server's resident size climb with every login: glibc keeps freed blocks of
//! that size in the worker thread's arena and does not give them back. So
//! each worker owns one [`Hasher`], whose block of memory grows to the largest
//! hash it has run and is then reused for every later one.

use std::fmt;
use std::str::FromStr;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use log::error;

/// The cost of new password hashes (`--hash-params m=KIB,t=ITER,p=LANES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashParams {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl Default for HashParams {
    /// OWASP's minimum for argon2id: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        Self {
            m_kib: 19456,
            t: 2,
            p: 1,
        }
    }
}

/// The most a stored hash may ask for: ten times the default in each
/// parameter (SPEC section 4). A file is data, not code; without a cap one
/// edited line could make every login allocate gigabytes or run for minutes.
pub const MAX_STORED: HashParams = HashParams {
    m_kib: 19456 * 10,
    t: 2 * 10,
    p: 10,
};

/// The most working memory a stored hash may need, in bytes (SPEC section 4).
/// Checked on the memory argon2 really allocates, which is `m` rounded up to
/// whole lanes and slices.
pub const MAX_STORED_MEMORY: u64 = 1 << 30;

/// The length of the hash output this server writes. A last line that lacks
/// its `\n` is only taken as whole if its output has this length: a line cut
/// inside the output could otherwise still parse, as a shorter and wrong hash.
pub const OUTPUT_LEN: usize = Params::DEFAULT_OUTPUT_LEN;

impl fmt::Display for HashParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m={},t={},p={}", self.m_kib, self.t, self.p)
    }
}

impl FromStr for HashParams {
    type Err = String;

    /// Parses `m=KIB,t=ITER,p=LANES`; any of the three may be left out.
    /// Parameters over [`MAX_STORED`] are refused: the hashes they made could
    /// not be loaded at the next start.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut params = HashParams::default();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("expected KEY=VALUE, got {part:?}"))?;
            let value: u32 = value
                .parse()
                .map_err(|_| format!("{key}: not a number: {value:?}"))?;
            match key {
                "m" => params.m_kib = value,
                "t" => params.t = value,
                "p" => params.p = value,
                _ => return Err(format!("unknown parameter {key:?} (use m, t, p)")),
            }
        }
        let argon = params.argon2()?;
        check_limits(params, argon.params())?;
        Ok(params)
    }
}

impl HashParams {
    /// The argon2id hasher for these parameters (output of [`OUTPUT_LEN`]).
    pub(crate) fn argon2(&self) -> Result<Argon2<'static>, String> {
        let params = Params::new(self.m_kib, self.t, self.p, Some(OUTPUT_LEN))
            .map_err(|e| format!("argon2: {e}"))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// The cost written in a stored hash.
    pub(crate) fn of(params: &Params) -> Self {
        Self {
            m_kib: params.m_cost(),
            t: params.t_cost(),
            p: params.p_cost(),
        }
    }
}

/// Refuses parameters over [`MAX_STORED`] or [`MAX_STORED_MEMORY`].
pub(crate) fn check_limits(cost: HashParams, params: &Params) -> Result<(), String> {
    let memory = params.block_count() as u64 * Block::SIZE as u64;
    if cost.m_kib > MAX_STORED.m_kib || cost.t > MAX_STORED.t || cost.p > MAX_STORED.p {
        Err(format!(
            "hash parameters {cost} exceed ten times the default ({MAX_STORED})"
        ))
    } else if memory > MAX_STORED_MEMORY {
        Err(format!(
            "hash parameters {cost} need {memory} bytes of memory, over 1 GiB"
        ))
    } else {
        Ok(())
    }
}

/// How many stored hashes use each cost, so that the dummy hash for an
/// unknown name can cost what a typical stored hash costs (SPEC section 4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamCounts(Vec<(HashParams, usize)>);

impl ParamCounts {
    /// Counts one more hash of cost `params`.
    pub fn add(&mut self, params: HashParams) {
        match self.0.iter_mut().find(|(p, _)| *p == params) {
            Some((_, n)) => *n += 1,
            None => self.0.push((params, 1)),
        }
    }

    /// The cost most hashes use; on a tie, the one seen first. `None` when
    /// nothing is counted.
    pub fn most_common(&self) -> Option<HashParams> {
        let mut best: Option<(HashParams, usize)> = None;
        for &(p, n) in &self.0 {
            if best.is_none_or(|(_, most)| n > most) {
                best = Some((p, n));
            }
        }
        best.map(|(p, _)| p)
    }
}

/// One worker thread's argon2 working memory, kept between hashes.
#[derive(Default)]
pub struct Hasher {
    memory: Vec<Block>,
}

impl Hasher {
    /// A hasher that has not allocated yet: memory comes with the first hash.
    pub fn new() -> Self {
        Self::default()
    }

    /// Working memory held now, in KiB (one block is 1 KiB).
    pub fn memory_kib(&self) -> usize {
        self.memory.len() * Block::SIZE / 1024
    }

    /// Runs argon2 in the kept memory, growing it first if this hash needs
    /// more than any before it.
    fn run(
        &mut self,
        argon: &Argon2<'_>,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), String> {
        let need = argon.params().block_count();
        if self.memory.len() < need {
            // Exactly what is needed: `resize` would otherwise round the
            // capacity up, and this block is kept for good.
            self.memory.reserve_exact(need - self.memory.len());
            self.memory.resize(need, Block::new());
        }
        argon
            .hash_password_into_with_memory(password, salt, out, &mut self.memory[..need])
            .map_err(|e| format!("argon2: {e}"))
    }

    /// Hashes a new password with a fresh random salt into a PHC string,
    /// `$argon2id$v=19$m=..,t=..,p=..$SALT$HASH`, as argon2's own
    /// `PasswordHasher` writes it, so files written before and after read
    /// the same.
    pub fn hash(&mut self, params: HashParams, password: &str) -> Result<String, String> {
        let argon = params.argon2()?;
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let mut out = [0u8; OUTPUT_LEN];
        self.run(&argon, password.as_bytes(), &salt, &mut out)?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
        let hash = PasswordHash {
            algorithm: argon2::ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: argon.params().try_into().map_err(|e| format!("{e}"))?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
        };
        Ok(hash.to_string())
    }

    /// Checks a password against a PHC string, with the parameters, salt and
    /// version written in it; the outputs are compared in constant time.
    pub fn verify(&mut self, phc: &str, password: &str) -> bool {
        match self.try_verify(phc, password) {
            Ok(matched) => matched,
            Err(e) => {
                error!("unusable password hash in accounts: {e}");
                false
            }
        }
    }

    fn try_verify(&mut self, phc: &str, password: &str) -> Result<bool, String> {
        let hash = PasswordHash::new(phc).map_err(|e| e.to_string())?;
        let algorithm = Algorithm::try_from(hash.algorithm).map_err(|e| e.to_string())?;
        let version = hash
            .version
            .map(Version::try_from)
            .transpose()
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let params = Params::try_from(&hash).map_err(|e| e.to_string())?;
        let expected = hash.hash.ok_or("no hash output")?;
        let salt = hash.salt.ok_or("no salt")?;
        let mut salt_buf = [0u8; 64];
        let salt = salt.decode_b64(&mut salt_buf).map_err(|e| e.to_string())?;
        let argon = Argon2::new(algorithm, version, params);
        let mut out = [0u8; Output::MAX_LENGTH];
        let out = &mut out[..expected.len()];
        self.run(&argon, password.as_bytes(), salt, out)?;
        let computed = Output::new(out).map_err(|e| e.to_string())?;
        // `Output`'s equality is constant-time.
        Ok(computed == expected)
    }

    /// Spends what verifying a hash of cost `params` spends, for a name that
    /// has no account: hashes the password with a random salt and throws the
    /// result away. Always a failure, by construction.
    pub fn burn(&mut self, params: HashParams, password: &str) {
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let mut out = [0u8; OUTPUT_LEN];
        let done = params
            .argon2()
            .and_then(|argon| self.run(&argon, password.as_bytes(), &salt, &mut out));
        if let Err(e) = done {
            error!("dummy hash failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordHasher;

    fn cheap() -> HashParams {
        "m=64,t=1,p=1".parse().unwrap()
    }

    #[test]
    fn hash_params_parse_and_reject() {
        assert_eq!("".parse::<HashParams>().unwrap(), HashParams::default());
        let p: HashParams = "m=256,t=1,p=1".parse().unwrap();
        assert_eq!((p.m_kib, p.t, p.p), (256, 1, 1));
        assert_eq!(p.to_string(), "m=256,t=1,p=1");
        assert!("m=1,t=1,p=1".parse::<HashParams>().is_err());
        assert!("x=3".parse::<HashParams>().is_err());
        assert!("m=abc".parse::<HashParams>().is_err());
        assert!("m=194560,t=20,p=10".parse::<HashParams>().is_ok());
        for over in ["m=194561", "t=21", "p=11"] {
            assert!(over.parse::<HashParams>().is_err(), "{over}");
        }
    }

    #[test]
    fn hashes_are_argon2id_and_verify_with_their_own_params() {
        let mut h = Hasher::new();
        let phc = h.hash(cheap(), "s3cret").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(!phc.contains("s3cret"));
        assert!(h.verify(&phc, "s3cret"));
        assert!(!h.verify(&phc, "s3cret!"));
        assert!(!h.verify("not a hash", "x"));
    }

    /// The PHC string is byte for byte what argon2's `PasswordHasher` makes
    /// from the same salt, and hashes made by it (old files) verify.
    #[test]
    fn same_format_as_argon2s_own_hasher() {
        let mut h = Hasher::new();
        let ours = h.hash(cheap(), "pw").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        let theirs = cheap()
            .argon2()
            .unwrap()
            .hash_password(b"pw", parsed.salt.unwrap())
            .unwrap()
            .to_string();
        assert_eq!(ours, theirs);
        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        let old = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(128, 2, 2, None).unwrap(),
        )
        .hash_password(b"old-pw", &salt)
        .unwrap()
        .to_string();
        assert!(h.verify(&old, "old-pw"));
        assert!(!h.verify(&old, "old-pW"));
    }

    /// The memory grows to the largest hash run and is then kept, not grown
    /// again nor given back.
    #[test]
    fn memory_grows_to_the_largest_hash_and_stays() {
        let mut h = Hasher::new();
        assert_eq!(h.memory_kib(), 0);
        let big: HashParams = "m=512,t=1,p=1".parse().unwrap();
        let phc = h.hash(cheap(), "pw").unwrap();
        assert_eq!(h.memory_kib(), 64);
        h.burn(big, "pw");
        assert_eq!(h.memory_kib(), 512);
        assert!(h.verify(&phc, "pw"));
        assert_eq!(h.memory_kib(), 512);
        let at = h.memory.as_ptr();
        for _ in 0..3 {
            assert!(h.verify(&phc, "pw"));
            h.burn(big, "x");
        }
        assert_eq!(h.memory.as_ptr(), at);
    }

    #[test]
    fn most_common_params_by_count_first_on_ties() {
        let mut counts = ParamCounts::default();
        assert_eq!(counts.most_common(), None);
        let a = HashParams::default();
        let b = cheap();
        counts.add(a);
        counts.add(b);
        assert_eq!(counts.most_common(), Some(a));
        counts.add(b);
        assert_eq!(counts.most_common(), Some(b));
    }
}
