//! One build context instead of several. The official CLI builds a project whose local
//! dependencies sit outside its folder with named build contexts (`docker build
//! --build-context name=path`, `COPY --from=name`) and a `# syntax=` line that asks
//! BuildKit for a frontend image. An engine's plain build API takes one context and no
//! frontend image, so [`flatten`] rewrites the Dockerfile to build from a folder that
//! holds the project's folder and every named context (the uploaded source's root): each
//! `COPY`/`ADD` source gets the folder it came from as a prefix, `--from=<named context>`
//! goes, and so does the `# syntax=` line (the engine's own parser reads the file).

use crate::files::relative_to;
use crate::Dockerfile;

/// `dockerfile` (generated for a config in folder `config_dir`) rewritten to build with
/// `root` as its only context; an error when a named context is not under `root`.
pub fn flatten(dockerfile: &Dockerfile, root: &str, config_dir: &str) -> Result<String, String> {
    let prefix_of = |dir: &str| -> Result<String, String> {
        match relative_to(dir, root) {
            Some(".") => Ok(String::new()),
            Some(rel) => Ok(format!("{rel}/")),
            None => Err(format!("{dir} is outside the uploaded source")),
        }
    };
    let own = prefix_of(config_dir)?;
    let mut out: Vec<String> = Vec::new();
    let mut lines = dockerfile.text.lines().peekable();
    // Parser directives come first; the syntax one names a frontend image.
    while lines
        .next_if(|l| l.trim_start().starts_with("# syntax="))
        .is_some()
    {}
    while let Some(first) = lines.next() {
        let mut instruction = first.to_owned();
        let copies = matches!(keyword(first).as_deref(), Some("COPY" | "ADD"));
        // A COPY or ADD continued over several lines is read as one.
        while copies && instruction.ends_with('\\') {
            let Some(next) = lines.next() else { break };
            instruction.pop();
            instruction.push(' ');
            instruction.push_str(next.trim_start());
        }
        if !copies {
            out.push(instruction);
            continue;
        }
        out.push(rewrite(&instruction, &own, &|name| {
            dockerfile
                .contexts
                .get(name)
                .map(|dir| prefix_of(dir))
                .transpose()
        })?);
    }
    let mut text = out.join("\n");
    if dockerfile.text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// The instruction's keyword, upper-cased.
fn keyword(line: &str) -> Option<String> {
    line.split_whitespace().next().map(str::to_uppercase)
}

/// One COPY or ADD with its sources prefixed. `context(name)`: the prefix of a named
/// context, `None` when `name` is a stage or an image (then the line stays as it is).
fn rewrite(
    line: &str,
    own: &str,
    context: &dyn Fn(&str) -> Result<Option<String>, String>,
) -> Result<String, String> {
    let mut words = line.split_whitespace();
    let keyword = words.next().unwrap_or_default();
    let mut flags: Vec<&str> = Vec::new();
    let mut prefix = own.to_owned();
    let mut rest: Vec<&str> = Vec::new();
    for word in words {
        if rest.is_empty() && word.starts_with("--") {
            match word.strip_prefix("--from=") {
                Some(name) => match context(name)? {
                    Some(p) => prefix = p,
                    None => return Ok(line.to_owned()),
                },
                None => flags.push(word),
            }
        } else {
            rest.push(word);
        }
    }
    let joined = rest.join(" ");
    let args = if joined.starts_with('[') {
        // The JSON form: every element but the last is a source.
        let Ok(mut list) = serde_json::from_str::<Vec<String>>(&joined) else {
            return Ok(line.to_owned());
        };
        let n = list.len().saturating_sub(1);
        for src in &mut list[..n] {
            *src = prefixed(&prefix, src);
        }
        serde_json::to_string(&list).unwrap_or(joined)
    } else {
        let n = rest.len().saturating_sub(1);
        let mut args: Vec<String> = rest[..n].iter().map(|s| prefixed(&prefix, s)).collect();
        args.extend(rest[n..].iter().map(|s| (*s).to_owned()));
        args.join(" ")
    };
    let mut words = vec![keyword.to_owned()];
    words.extend(flags.iter().map(|f| (*f).to_owned()));
    words.push(args);
    Ok(words.join(" "))
}

/// A source path under `prefix` (URLs stay as they are).
fn prefixed(prefix: &str, src: &str) -> String {
    if prefix.is_empty() || src.contains("://") {
        return src.to_owned();
    }
    match src.trim_start_matches("./") {
        "" | "." => prefix.to_owned(),
        rest => format!("{prefix}{}", rest.trim_start_matches('/')),
    }
}

#[cfg(test)]
mod tests {
    use super::flatten;
    use crate::Dockerfile;
    use indexmap::IndexMap;

    fn dockerfile(text: &str, contexts: &[(&str, &str)]) -> Dockerfile {
        Dockerfile {
            text: text.to_owned(),
            contexts: contexts
                .iter()
                .map(|(n, p)| ((*n).to_owned(), (*p).to_owned()))
                .collect::<IndexMap<_, _>>(),
        }
    }

    #[test]
    fn named_contexts_become_folders_of_one_context() {
        let d = dockerfile(
            "# syntax=docker/dockerfile:1.4\n\nFROM base:3.11\n\
             COPY --from=outer-lib . /deps/outer-lib/src\n\
             COPY --from=outer-lib requirements.txt /deps/r.txt\n\
             ADD . /deps/app/src\n\
             ADD --chown=1:1 pip.conf /pipconfig.txt\n\
             COPY --from=builder /out /out\n\
             copy [\"a b.txt\", \"c\", \"/dest/\"]\n\
             COPY one \\\n    two /dest\n\
             RUN echo COPY x y\n",
            &[("outer-lib", "/src/libs/lib")],
        );
        assert_eq!(
            flatten(&d, "/src", "/src/app").unwrap(),
            "\nFROM base:3.11\n\
             COPY libs/lib/ /deps/outer-lib/src\n\
             COPY libs/lib/requirements.txt /deps/r.txt\n\
             ADD app/ /deps/app/src\n\
             ADD --chown=1:1 app/pip.conf /pipconfig.txt\n\
             COPY --from=builder /out /out\n\
             copy [\"app/a b.txt\",\"app/c\",\"/dest/\"]\n\
             COPY app/one app/two /dest\n\
             RUN echo COPY x y\n"
        );
    }

    #[test]
    fn a_context_outside_the_root_is_refused() {
        let d = dockerfile("FROM b\nCOPY --from=x . /x\n", &[("x", "/elsewhere/lib")]);
        assert_eq!(
            flatten(&d, "/src", "/src/app"),
            Err("/elsewhere/lib is outside the uploaded source".to_owned())
        );
    }
}
