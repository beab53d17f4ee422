//! docker's `--format` templates: the subset of Go's text/template that scripts use on
//! `inspect` output, rendered over serde_json values. Actions: `{{.}}`, field paths
//! (`{{.State.Pid}}`, `{{.NetworkSettings.IPAddress}}`), `{{json PATH}}` (the value as
//! JSON), `{{range PATH}}...{{end}}` (the body once per element of an array or value of
//! an object, with `.` the element) and `{{if PATH}}...{{else}}...{{end}}` (Go's
//! truth: false, 0, "", null and empty arrays and objects are false). `{{-` and `-}}`
//! trim the white space beside them. Values print as Go's fmt does (`[a b]`,
//! `map[k:v]`, `<nil>`).

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

/// One parsed piece of a template.
#[derive(Debug)]
enum Node {
    Text(String),
    /// A value to print: (json?, path).
    Print(bool, Vec<String>),
    Range(Vec<String>, Vec<Node>),
    If(Vec<String>, Vec<Node>, Vec<Node>),
}

/// A parsed template, rendered once per value.
#[derive(Debug)]
pub struct Template(Vec<Node>);

/// `.A.B` -> ["A", "B"]; `.` -> [].
fn path(arg: &str, template: &str) -> Result<Vec<String>> {
    let Some(rest) = arg.strip_prefix('.') else {
        bail!("template {template:?}: {arg:?} is not a field path: use .Field or .");
    };
    Ok(rest.split('.').filter(|s| !s.is_empty()).map(String::from).collect())
}

enum Tok {
    Text(String),
    Action(String),
}

fn tokens(t: &str) -> Result<Vec<Tok>> {
    let mut out = Vec::new();
    let mut rest = t;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| anyhow!("template {t:?}: an action is not closed with }}}}"))?;
        let mut action = &after[..end];
        if let Some(a) = action.strip_prefix('-') {
            text = text.trim_end();
            action = a;
        }
        trim_next = false;
        if let Some(a) = action.strip_suffix('-') {
            trim_next = true;
            action = a;
        }
        out.push(Tok::Text(text.to_string()));
        out.push(Tok::Action(action.trim().to_string()));
        rest = &after[end + 2..];
    }
    out.push(Tok::Text(if trim_next { rest.trim_start() } else { rest }.to_string()));
    Ok(out)
}

impl Template {
    /// Parses `text`.
    ///
    /// Errors: an unclosed action, an unknown function, a missing or extra `{{end}}`.
    pub fn parse(text: &str) -> Result<Template> {
        let toks = tokens(text)?;
        let mut it = toks.into_iter();
        let (nodes, end) = Self::block(&mut it, text)?;
        if let Some(e) = end {
            bail!("template {text:?}: unexpected {{{{{e}}}}}");
        }
        Ok(Template(nodes))
    }

    /// Nodes up to `{{end}}`/`{{else}}` (returned) or the end of input (None).
    fn block(it: &mut impl Iterator<Item = Tok>, t: &str) -> Result<(Vec<Node>, Option<String>)> {
        let mut nodes = Vec::new();
        while let Some(tok) = it.next() {
            let a = match tok {
                Tok::Text(s) => {
                    if !s.is_empty() {
                        nodes.push(Node::Text(s));
                    }
                    continue;
                }
                Tok::Action(a) => a,
            };
            let words: Vec<&str> = a.split_whitespace().collect();
            match words.as_slice() {
                ["end"] | ["else"] => return Ok((nodes, Some(a))),
                ["range", p] => {
                    let (body, end) = Self::block(it, t)?;
                    if end.as_deref() != Some("end") {
                        bail!("template {t:?}: {{{{range}}}} without {{{{end}}}}");
                    }
                    nodes.push(Node::Range(path(p, t)?, body));
                }
                ["if", p] => {
                    let (then, end) = Self::block(it, t)?;
                    let other = match end.as_deref() {
                        Some("end") => Vec::new(),
                        Some("else") => match Self::block(it, t)? {
                            (o, Some(e)) if e == "end" => o,
                            _ => bail!("template {t:?}: {{{{else}}}} without {{{{end}}}}"),
                        },
                        _ => bail!("template {t:?}: {{{{if}}}} without {{{{end}}}}"),
                    };
                    nodes.push(Node::If(path(p, t)?, then, other));
                }
                ["json", p] => nodes.push(Node::Print(true, path(p, t)?)),
                [p] => nodes.push(Node::Print(false, path(p, t)?)),
                _ => bail!("template {t:?}: {{{{{a}}}}} is not supported: use .Field, json, range, if, else or end"),
            }
        }
        Ok((nodes, None))
    }

    /// The template applied to `v`.
    ///
    /// Errors: a field path that names no field of `v` (docker: "map has no entry").
    pub fn render(&self, v: &Value) -> Result<String> {
        let mut out = String::new();
        render(&self.0, v, &mut out)?;
        Ok(out)
    }
}

fn lookup<'a>(v: &'a Value, p: &[String]) -> Result<&'a Value> {
    let mut cur = v;
    for f in p {
        cur = match cur {
            Value::Object(m) => m
                .get(f)
                .ok_or_else(|| anyhow!("template: no field {f:?} in .{}", p.join(".")))?,
            _ => bail!("template: .{} is not an object at {f:?}", p.join(".")),
        };
    }
    Ok(cur)
}

fn truth(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A value as Go's fmt prints it with %v.
fn go_fmt(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_fmt).collect::<Vec<_>>().join(" ")),
        Value::Object(o) => format!(
            "map[{}]",
            o.iter()
                .map(|(k, v)| format!("{k}:{}", go_fmt(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        other => other.to_string(),
    }
}

fn render(nodes: &[Node], v: &Value, out: &mut String) -> Result<()> {
    for n in nodes {
        match n {
            Node::Text(s) => out.push_str(s),
            Node::Print(false, p) => out.push_str(&go_fmt(lookup(v, p)?)),
            Node::Print(true, p) => out.push_str(&serde_json::to_string(lookup(v, p)?)?),
            Node::Range(p, body) => match lookup(v, p)? {
                Value::Array(a) => a.iter().try_for_each(|e| render(body, e, out))?,
                Value::Object(o) => o.values().try_for_each(|e| render(body, e, out))?,
                Value::Null => {}
                other => bail!("template: cannot range over {}", go_fmt(other)),
            },
            Node::If(p, then, other) => render(if truth(lookup(v, p)?) { then } else { other }, v, out)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_subset() {
        let v = serde_json::json!({"State": {"Pid": 42, "Running": true}, "Name": "web",
            "NetworkSettings": {"IPAddress": "10.88.0.2"}, "Config": {"Env": ["A=1", "B=2"], "Tty": false}});
        let r = |t: &str| Template::parse(t).unwrap().render(&v).unwrap();
        assert_eq!(r("{{.State.Pid}}"), "42");
        assert_eq!(r("{{.Name}} {{.NetworkSettings.IPAddress}}"), "web 10.88.0.2");
        assert_eq!(r("{{json .Config}}"), r#"{"Env":["A=1","B=2"],"Tty":false}"#);
        assert_eq!(r("{{range .Config.Env}}{{.}};{{end}}"), "A=1;B=2;");
        assert_eq!(r("{{range .Config.Env -}} \n {{.}} {{- end}}"), "A=1B=2");
        assert_eq!(r("{{if .State.Running}}up{{else}}down{{end}}"), "up");
        assert_eq!(r("{{if .Config.Tty}}tty{{end}}"), "");
        assert_eq!(r("{{.Config.Env}}"), "[A=1 B=2]");
        for bad in [
            "{{.State.Pid",
            "{{range .X}}",
            "{{end}}",
            "{{printf \"%d\" 1}}",
            "{{State}}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
        assert!(Template::parse("{{.Nope}}").unwrap().render(&v).is_err());
    }
}
