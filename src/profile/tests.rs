//! `[test]` and `[[test]]`: the tests of a profile, one table or a list of them under
//! the same key, and what each runs.

use serde::Deserialize;

use super::schema::Profile;
use super::types::{Located, RelPath, Seconds, Size};
use crate::tree::path::ImagePath;

/// `[test]` or `[[test]]`: one table, or a list of them under the same key.
#[derive(Debug, Clone)]
pub enum Tests {
    /// `[test]`: a single test.
    One(Box<Test>),
    /// `[[test]]`: several, each a boot of the same image.
    Many(Vec<Located<Test>>),
}

impl<'de> Deserialize<'de> for Tests {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Tests;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a [test] table or a list of [[test]] tables")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Tests, A::Error> {
                Test::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|t| Tests::One(Box::new(t)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Tests, A::Error> {
                let mut all = Vec::new();
                while let Some(t) = seq.next_element::<Located<Test>>()? {
                    all.push(t);
                }
                Ok(Tests::Many(all))
            }
        }
        d.deserialize_any(V)
    }
}

impl Profile {
    /// The profile's tests in order, each located where it was written (a single `[test]`
    /// is a list of one).
    pub fn tests(&self) -> Vec<Located<Test>> {
        match self.test.as_ref() {
            None => Vec::new(),
            Some(t) => match &t.value {
                Tests::One(one) => vec![Located {
                    value: (**one).clone(),
                    loc: t.loc.clone(),
                    key: t.key.clone(),
                }],
                Tests::Many(all) => all.clone(),
            },
        }
    }
}

/// The name a test has when the profile does not give one.
pub const DEFAULT_TEST_NAME: &str = "test";

/// One test: a command, a script or a systemd unit run in the booted guest; exactly one of
/// them is required. Each test is its own boot of the shared image.
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct Test {
    /// The test's name, for `--test NAME`, reports and run directories; required when
    /// there are several tests, else "test". Letters, digits, `.`, `_` and `-`.
    pub name: Option<String>,
    /// Shell command run in the guest by /bin/sh -c.
    pub command: Option<String>,
    /// Host script copied into the guest and run instead of `command`.
    pub script: Option<RelPath>,
    /// A systemd unit in the image started instead (disk and tar images); its main
    /// process's exit status is the test's.
    pub unit: Option<String>,
    /// Glob patterns of the kernels (as reports name them) this test runs on; default all.
    #[serde(default)]
    pub kernels: Vec<String>,
    /// Files (relative to `results`) the test must leave; a run without them fails.
    #[serde(default)]
    pub require: Vec<String>,
    /// A file (relative to `results`) holding TAP the test writes, e.g. BATS's
    /// `--formatter tap`: its cases are reported, and a `not ok` fails the run.
    pub tap: Option<String>,
    /// How long the whole run (boot, test, power-off) may take.
    pub timeout: Option<Seconds>,
    /// A directory in the guest whose contents come back to the host after the run.
    pub results: Option<ImagePath>,
    /// Size of the results disk (default 1G; sparse, so it costs what the guest writes).
    pub results_size: Option<Size>,
    /// What a kernel splat (Oops, BUG, WARNING, KASAN, …) on the console does to a test
    /// that passed: "fail" (default) or "warn".
    pub splats: Option<Splats>,
}

/// What a kernel splat does to a passing test.
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Splats {
    /// The run fails as a kernel splat.
    #[default]
    Fail,
    /// The run passes; the splat is reported.
    Warn,
}
