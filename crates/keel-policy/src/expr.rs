//! CEL conditions: bounded before parsing (length, bracket nesting, operator count — deep
//! nesting overflows the parser's stack and would abort the process), compiled once at load,
//! checked statically (known variables and detector fields, comprehension nesting), and run
//! against an activation of borrowed values, so evaluation copies no text.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr};
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelString, CelTimestamp,
};
use cel::common::value::Val;
use cel::{Context, Env, IdedExpr, Program, Value};

/// Longest accepted `when:` expression, in bytes.
pub const MAX_EXPR_LEN: usize = 4096;
/// Deepest accepted nesting of `(`, `[` and `{`.
pub const MAX_NESTING: usize = 24;
/// Most operators and punctuation tokens accepted in one expression (bounds the AST's depth:
/// `a + a + … + a` parses to a left-deep tree).
pub const MAX_OPERATORS: usize = 256;
/// Deepest accepted nesting of comprehensions (`all`, `exists`, `map`, `filter`): evaluation
/// cost is O(expression size × n^depth) for lists of n elements.
pub const MAX_COMPREHENSION_DEPTH: usize = 2;

/// The variables a condition may read.
pub const VARIABLES: [&str; 4] = ["request", "response", "signals", "context"];

/// A compiled `when:` condition.
pub(crate) struct Condition {
    program: Program,
    pub uses: Uses,
}

/// What a condition reads, found statically.
#[derive(Debug, Default, Clone)]
pub(crate) struct Uses {
    pub request: bool,
    pub response: bool,
    pub context: bool,
    /// Detector ids read as `signals.<id>`.
    pub signals: BTreeSet<String>,
    /// `signals` read other than as `signals.<id>` (all detectors must be computed).
    pub signals_dynamic: bool,
}

/// Rejects expressions whose size or nesting could exhaust the parser's stack, without parsing.
pub(crate) fn precheck(src: &str) -> Result<(), String> {
    if src.len() > MAX_EXPR_LEN {
        return Err(format!(
            "expression is {} bytes long; the limit is {MAX_EXPR_LEN}",
            src.len()
        ));
    }
    let mut depth = 0usize;
    let mut operators = 0usize;
    let mut unary_run = 0usize;
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                // Skip a string literal (triple-quoted too), honouring backslash escapes.
                let triple = chars.peek() == Some(&c) && {
                    let mut look = chars.clone();
                    look.next();
                    look.peek() == Some(&c)
                };
                if triple {
                    chars.next();
                    chars.next();
                }
                let mut run = 0;
                loop {
                    let Some(d) = chars.next() else {
                        return Err("unterminated string literal".to_string());
                    };
                    if d == '\\' {
                        chars.next();
                        run = 0;
                        continue;
                    }
                    if d == c {
                        run += 1;
                        if !triple || run == 3 {
                            break;
                        }
                    } else {
                        run = 0;
                    }
                }
                unary_run = 0;
            }
            '(' | '[' | '{' => {
                depth += 1;
                operators += 1;
                if depth > MAX_NESTING {
                    return Err(format!(
                        "expression nests deeper than {MAX_NESTING} brackets"
                    ));
                }
            }
            ')' | ']' | '}' => {
                depth = depth.saturating_sub(1);
                unary_run = 0;
            }
            '!' | '-' => {
                operators += 1;
                unary_run += 1;
                if unary_run > 8 {
                    return Err("more than 8 unary operators in a row".to_string());
                }
            }
            '+' | '*' | '/' | '%' | '<' | '>' | '=' | '&' | '|' | '?' | ':' | '.' | ',' => {
                operators += 1;
                unary_run = 0;
            }
            c if c.is_whitespace() => {}
            _ => unary_run = 0,
        }
        if operators > MAX_OPERATORS {
            return Err(format!(
                "expression has more than {MAX_OPERATORS} operators"
            ));
        }
    }
    Ok(())
}

/// The environment all conditions compile and run in: CEL's standard library (without
/// `matches()`: regexes belong in detectors, compiled at load).
pub(crate) fn env() -> Arc<Env> {
    Arc::new(Env::stdlib())
}

/// Compiles a condition: precheck, parse, static checks. `detector_fields` maps each detector id
/// to the fields `signals.<id>` has.
pub(crate) fn compile(
    env: &Env,
    src: &str,
    detector_fields: &HashMap<String, Vec<&'static str>>,
) -> Result<Condition, String> {
    precheck(src)?;
    let program = env.compile(src).map_err(|e| {
        e.errors
            .iter()
            .map(|e| format!("{}:{}: {}", e.pos.0, e.pos.1, e.msg))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let mut walker = Walker {
        uses: Uses::default(),
        scopes: Vec::new(),
        errors: Vec::new(),
        detector_fields,
        nodes: 0,
    };
    walker.walk(program.expression(), 0, 0);
    if !walker.errors.is_empty() {
        return Err(walker.errors.join("; "));
    }
    Ok(Condition {
        program,
        uses: walker.uses,
    })
}

struct Walker<'a> {
    uses: Uses,
    scopes: Vec<String>,
    errors: Vec<String>,
    detector_fields: &'a HashMap<String, Vec<&'static str>>,
    nodes: usize,
}

impl Walker<'_> {
    fn walk(&mut self, e: &IdedExpr, depth: usize, comprehensions: usize) {
        self.nodes += 1;
        if depth > 200 || self.nodes > 4 * MAX_OPERATORS + 64 {
            if self.errors.is_empty() {
                self.errors.push("expression is too complex".to_string());
            }
            return;
        }
        match &e.expr {
            Expr::Ident(name) => self.ident(name),
            Expr::Select(sel) => {
                if let Expr::Ident(root) = &sel.operand.expr {
                    if root == "signals" && !self.scopes.iter().any(|s| s == "signals") {
                        self.uses.signals.insert(sel.field.clone());
                        if !self.detector_fields.contains_key(&sel.field) {
                            self.errors.push(format!(
                                "`signals.{}`: no detector `{}`",
                                sel.field, sel.field
                            ));
                        }
                        return;
                    }
                }
                if let Expr::Select(inner) = &sel.operand.expr {
                    if let Expr::Ident(root) = &inner.operand.expr {
                        if root == "signals" && !self.scopes.iter().any(|s| s == "signals") {
                            self.uses.signals.insert(inner.field.clone());
                            match self.detector_fields.get(&inner.field) {
                                None => self.errors.push(format!(
                                    "`signals.{}`: no detector `{}`",
                                    inner.field, inner.field
                                )),
                                Some(fields) if !fields.contains(&sel.field.as_str()) => {
                                    self.errors.push(format!(
                                        "`signals.{}.{}`: unknown field (known: {})",
                                        inner.field,
                                        sel.field,
                                        fields.join(", ")
                                    ))
                                }
                                Some(_) => {}
                            }
                            return;
                        }
                    }
                }
                self.walk(&sel.operand, depth + 1, comprehensions);
            }
            Expr::Call(call) => {
                if call.func_name == "matches" {
                    self.errors.push(
                        "`matches()` compiles a regex on every call: declare a regex detector and read `signals.<id>` instead".to_string(),
                    );
                }
                if let Some(t) = &call.target {
                    self.walk(t, depth + 1, comprehensions);
                }
                for a in &call.args {
                    self.walk(a, depth + 1, comprehensions);
                }
            }
            Expr::Comprehension(c) => {
                if comprehensions + 1 > MAX_COMPREHENSION_DEPTH {
                    self.errors.push(format!(
                        "comprehensions nest deeper than {MAX_COMPREHENSION_DEPTH}"
                    ));
                    return;
                }
                self.walk(&c.iter_range, depth + 1, comprehensions);
                self.walk(&c.accu_init, depth + 1, comprehensions);
                let pushed = 2 + usize::from(c.iter_var2.is_some());
                self.scopes.push(c.iter_var.clone());
                self.scopes.push(c.accu_var.clone());
                if let Some(v) = &c.iter_var2 {
                    self.scopes.push(v.clone());
                }
                self.walk(&c.loop_cond, depth + 1, comprehensions + 1);
                self.walk(&c.loop_step, depth + 1, comprehensions + 1);
                self.walk(&c.result, depth + 1, comprehensions + 1);
                for _ in 0..pushed {
                    self.scopes.pop();
                }
            }
            Expr::List(l) => {
                for x in &l.elements {
                    self.walk(x, depth + 1, comprehensions);
                }
            }
            Expr::Map(m) => {
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        self.walk(&me.key, depth + 1, comprehensions);
                        self.walk(&me.value, depth + 1, comprehensions);
                    }
                }
            }
            Expr::Struct(_) => self
                .errors
                .push("message literals are not supported in conditions".to_string()),
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    fn ident(&mut self, name: &str) {
        if self.scopes.iter().any(|s| s == name) {
            return;
        }
        match name {
            "request" => self.uses.request = true,
            "response" => self.uses.response = true,
            "context" => self.uses.context = true,
            "signals" => self.uses.signals_dynamic = true,
            // Type names usable as conversion functions' operands, e.g. `type(x) == string`.
            "int" | "uint" | "double" | "string" | "bool" | "bytes" | "list" | "map"
            | "null_type" | "type" => {}
            other => self.errors.push(format!(
                "unknown variable `{other}` (known: {})",
                VARIABLES.join(", ")
            )),
        }
    }
}

/// A CEL value under construction, borrowing text from the evaluation input.
pub(crate) type BoxVal<'v> = Box<dyn Val + 'v>;

pub(crate) fn str_val(s: &str) -> BoxVal<'_> {
    Box::new(CelString::from(s))
}
pub(crate) fn owned_str<'v>(s: String) -> BoxVal<'v> {
    Box::new(CelString::from(s))
}
pub(crate) fn int_val<'v>(i: usize) -> BoxVal<'v> {
    Box::new(CelInt::from(i64::try_from(i).unwrap_or(i64::MAX)))
}
pub(crate) fn bool_val<'v>(b: bool) -> BoxVal<'v> {
    Box::new(CelBool::from(b))
}
pub(crate) fn list_val(items: Vec<BoxVal<'_>>) -> BoxVal<'_> {
    Box::new(CelList::from(items))
}
pub(crate) fn time_val<'v>(t: chrono::DateTime<chrono::Utc>) -> BoxVal<'v> {
    Box::new(CelTimestamp::from(t.fixed_offset()))
}
pub(crate) fn map_val<'v>(entries: Vec<(&'v str, BoxVal<'v>)>) -> BoxVal<'v> {
    let map: HashMap<CelMapKey<'v>, BoxVal<'v>> = entries
        .into_iter()
        .map(|(k, v)| (CelMapKey::from(k), v))
        .collect();
    Box::new(CelMap::from(map))
}

/// A map of owned string keys to doubles (`signals.learned`).
pub(crate) fn double_map<'v>(entries: Vec<(String, f64)>) -> BoxVal<'v> {
    let map: HashMap<CelMapKey<'v>, BoxVal<'v>> = entries
        .into_iter()
        .map(|(k, v)| {
            (
                CelMapKey::from(k),
                Box::new(CelDouble::from(v)) as BoxVal<'v>,
            )
        })
        .collect();
    Box::new(CelMap::from(map))
}

/// The variables of one evaluation.
pub(crate) struct Activation<'v> {
    pub vars: Vec<(&'static str, BoxVal<'v>)>,
}

impl Condition {
    /// Evaluates against a context built from `ctx`; non-boolean results are errors.
    pub fn eval(&self, ctx: &Context<'_, '_>) -> Result<bool, String> {
        match self.program.execute(ctx) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "condition evaluated to {}, not bool",
                other.type_of()
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Builds the CEL context for one evaluation.
pub(crate) fn context<'p, 'v: 'p>(env: &Arc<Env>, act: Activation<'v>) -> Context<'p, 'v> {
    let mut ctx = Context::with_env(Arc::clone(env));
    for (name, v) in act.vars {
        ctx.add_variable_as_val(name, v);
    }
    ctx
}
