//! `levee new` and `levee wit`: everything an author needs to write a function outside this
//! repository.
//!
//! [`wit_files`] is the contract (`functions/wit/`, embedded at build time) that `levee wit`
//! prints or writes. [`create`] scaffolds a project in its own folder, in Rust (with the guest
//! SDK vendored, since `levee-sdk` is not published), Python (componentize-py) or JavaScript
//! (componentize-js): the contract under `wit/`, a handler whose logic is unit-tested natively,
//! a `build.sh`, and a README.md with the build command and the manifest entry to paste. Every
//! scaffold writes the same example function (a per-org counter and a greeting from config), so
//! the three languages can be compared like for like.

use std::fmt;
use std::path::{Path, PathBuf};

mod js;
mod python;
mod rust;

/// The languages `levee new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with the Levee SDK (vendored), `cargo build --target wasm32-wasip2`.
    Rust,
    /// Python with componentize-py.
    Python,
    /// JavaScript with componentize-js.
    Js,
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        })
    }
}

/// Why a scaffold or the contract could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The function name is not one the manifest accepts.
    #[error(
        "function name {name:?}: {reason} (use lowercase letters, digits and '-', starting with a letter, at most {MAX_NAME_LEN} characters)"
    )]
    InvalidName { name: String, reason: &'static str },
    /// The target exists and is not an empty directory: nothing is overwritten.
    #[error(
        "{} already exists and is not an empty directory; pick another --dir or remove it",
        .0.display()
    )]
    NotEmpty(PathBuf),
    /// Reading or writing the file system failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Longest function name accepted (queue names are derived from it).
pub const MAX_NAME_LEN: usize = 40;

/// The contract, as `(path under wit/, text)`: the world `capability` and its dependencies.
pub fn wit_files() -> &'static [(&'static str, &'static str)] {
    &[
        (
            "levee.wit",
            include_str!("../../../functions/wit/levee.wit"),
        ),
        (
            "deps/config/store.wit",
            include_str!("../../../functions/wit/deps/config/store.wit"),
        ),
    ]
}

/// The contract as one text, each file under a `// wit/PATH` header line (what `levee wit`
/// prints).
pub fn wit_text() -> String {
    let mut out = String::new();
    for (i, (path, text)) in wit_files().iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("// ==> wit/{path} <==\n"));
        out.push_str(text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// Writes the contract into `dir` (created if needed; existing files are replaced) as
/// `levee.wit` and `deps/...`, ready for `wit-bindgen`, componentize-py or componentize-js
/// (`--wit DIR`). Returns the files written.
pub fn write_wit(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut written = Vec::new();
    for (path, text) in wit_files() {
        let file = dir.join(path);
        write(&file, text)?;
        written.push(file);
    }
    Ok(written)
}

/// Checks `name` is a valid function name: lowercase ASCII letters, digits and '-', starting
/// with a letter, not ending with '-', at most [`MAX_NAME_LEN`] characters.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("is too long");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return bad("must start with a lowercase letter");
    }
    if name.ends_with('-') {
        return bad("must not end with '-'");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return match c {
            'A'..='Z' => bad("has an uppercase letter"),
            '_' => bad("has '_'"),
            _ => bad("has a character that is not a lowercase letter, digit or '-'"),
        };
    }
    Ok(())
}

/// What [`create`] wrote and how to go on.
#[derive(Debug, Clone)]
pub struct Project {
    /// The function's name.
    pub name: String,
    /// The language.
    pub lang: Lang,
    /// The project's folder (absolute).
    pub dir: PathBuf,
    /// Every file written, relative to `dir`, in the order written.
    pub files: Vec<PathBuf>,
    /// The component the build writes (absolute).
    pub module: PathBuf,
    /// The shell command that builds it, run in `dir`.
    pub build: String,
    /// The shell command that runs the unit tests, run in `dir`.
    pub test: String,
    /// The `[functions.NAME]` entry to paste into the platform's manifest.
    pub manifest_entry: String,
}

impl Project {
    /// What `levee new` prints: what was created and the next steps.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "created {} function `{}` in {}:\n",
            self.lang,
            self.name,
            self.dir.display()
        );
        for f in &self.files {
            out.push_str(&format!("  {}\n", f.display()));
        }
        out.push_str(&format!(
            "\nnext steps:\n  cd {}\n  {}    # unit tests, natively\n  ./build.sh    # {}\n\n\
             then add this to the platform's manifest (levee.toml):\n\n{}",
            self.dir.display(),
            self.test,
            self.build,
            self.manifest_entry
        ));
        out
    }
}

/// One file of a scaffold: its path in the project and its text.
struct File {
    path: String,
    text: String,
    executable: bool,
}

impl File {
    fn new(path: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            text: text.into(),
            executable: false,
        }
    }

    fn script(path: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            executable: true,
            ..Self::new(path, text)
        }
    }
}

/// What a language module produces for a project.
struct Plan {
    files: Vec<File>,
    /// The built component, relative to the project.
    module: String,
    build: String,
    test: String,
    /// `memory_mb` that the component needs.
    memory_mb: u32,
}

/// Scaffolds function `name` in `lang` into `dir` (created if missing; an existing directory
/// must be empty). Nothing is written when the name is invalid or `dir` is not empty.
pub fn create(name: &str, lang: Lang, dir: &Path) -> Result<Project, Error> {
    validate_name(name)?;
    check_empty(dir)?;
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let dir = std::fs::canonicalize(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let ctx = Vars::new(name);
    let mut plan = match lang {
        Lang::Rust => rust::plan(&ctx),
        Lang::Python => python::plan(&ctx),
        Lang::Js => js::plan(&ctx),
    };
    let module = dir.join(&plan.module);
    let manifest_entry = manifest_entry(name, &module, plan.memory_mb);
    for (path, text) in wit_files() {
        plan.files.push(File::new(format!("wit/{path}"), *text));
    }
    let readme = ctx.fill(match lang {
        Lang::Rust => include_str!("templates/rust/README.md"),
        Lang::Python => include_str!("templates/python/README.md"),
        Lang::Js => include_str!("templates/js/README.md"),
    });
    let readme = readme.replace("{{manifest}}", manifest_entry.trim_end());
    plan.files.push(File::new("README.md", readme));
    plan.files.push(File::new(".gitignore", gitignore(lang)));

    let mut files = Vec::new();
    for f in &plan.files {
        let path = dir.join(&f.path);
        write(&path, &f.text)?;
        if f.executable {
            make_executable(&path)?;
        }
        files.push(PathBuf::from(&f.path));
    }
    Ok(Project {
        name: name.to_string(),
        lang,
        dir,
        files,
        module,
        build: plan.build,
        test: plan.test,
        manifest_entry,
    })
}

/// The manifest entry for a component at `module`.
pub fn manifest_entry(name: &str, module: &Path, memory_mb: u32) -> String {
    format!(
        "[functions.{name}]\nmodule = {module:?}\nmemory_mb = {memory_mb}\ntimeout_ms = 5000\n\n\
         [functions.{name}.config]\ngreeting = \"hello\"\n",
        module = module.display().to_string()
    )
}

/// The names a template may use: `{{name}}` (the function), `{{crate}}` (its Rust library
/// name, '-' as '_').
struct Vars {
    name: String,
    crate_name: String,
}

impl Vars {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            crate_name: name.replace('-', "_"),
        }
    }

    fn fill(&self, template: &str) -> String {
        template
            .replace("{{name}}", &self.name)
            .replace("{{crate}}", &self.crate_name)
    }
}

fn gitignore(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "/target\n",
        Lang::Python => "*.wasm\n__pycache__/\n/wit_world/\n/componentize_py_*\n/poll_loop.py\n",
        Lang::Js => "*.wasm\nnode_modules/\n",
    }
}

fn check_empty(dir: &Path) -> Result<(), Error> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::NotEmpty(dir.to_path_buf()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory || dir.is_file() => {
            Err(Error::NotEmpty(dir.to_path_buf()))
        }
        Err(source) => Err(Error::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| Error::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, text).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(unix)]
fn make_executable(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(|source| {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> Result<(), Error> {
    Ok(())
}

#[cfg(test)]
mod tests;
