//! `r.js`: JavaScript run by embedded QuickJS engines on worker threads.
//!
//! Off unless the server enables it (`enable`), since a script is arbitrary code. Each
//! worker thread owns one QuickJS runtime with a memory limit and a stack limit; a
//! script is interrupted when its `timeout` passes. QuickJS alone has no file, network
//! or module access (nothing of its libc layer is loaded). A query waiting for a worker
//! suspends its fiber, so a long or runaway script never stalls the other queries of
//! its core; a runtime that timed out or ran out of memory is thrown away and rebuilt.
//!
//! A script that evaluates to a function gives a ReQL function; calling it sends the
//! source and the arguments to any worker, which keeps compiled functions by source.

use super::workers::{Stopped, Workers};
use super::{Ctx, Env, Func, Val};
use crate::datum::{Datum, Object, REQL_TYPE};
use crate::error::{logic, Result};
use crate::term::{Op, Term};
use crate::term_type as tt;
use rquickjs::function::Rest;
use rquickjs::{Context, Function, Persistent, Runtime, Value};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How the server runs scripts.
#[derive(Clone, Debug)]
pub struct JsConfig {
    /// Worker threads (scripts that can run at once).
    pub workers: usize,
    /// Heap limit of each worker's runtime.
    pub memory_bytes_max: usize,
}

/// Default for the `timeout` optarg, in seconds (RethinkDB's).
pub const TIMEOUT_DEFAULT_SECS: f64 = 5.0;
/// Compiled functions a worker keeps (by source) before it starts over.
const FUNCTION_CACHE_MAX: usize = 256;
/// Native stack a script may use (deep recursion fails instead of crashing).
const STACK_BYTES_MAX: usize = 1 << 20;
/// Stack of a worker thread: QuickJS's limit plus room for the runtime itself.
const THREAD_STACK_BYTES: usize = 8 << 20;
/// Nesting of arrays and objects converted between JavaScript and ReQL.
const DEPTH_MAX: usize = 100;

static POOL: OnceLock<Workers<Job>> = OnceLock::new();

/// Starts the workers; `r.js` is refused until this is called.
pub fn enable(cfg: &JsConfig) -> std::io::Result<()> {
    if POOL.get().is_some() {
        return Ok(());
    }
    let mem = cfg.memory_bytes_max;
    let pool = Workers::start("rdb-js", cfg.workers, Some(THREAD_STACK_BYTES), move |rx| {
        worker(rx, mem)
    })?;
    let _ = POOL.set(pool);
    Ok(())
}

pub fn enabled() -> bool {
    POOL.get().is_some()
}

/// A JavaScript function returned by `r.js`.
pub struct JsFunc {
    pub source: Arc<str>,
    pub timeout: Duration,
}

enum Task {
    Eval,
    Call(Vec<Datum>),
}

enum Outcome {
    Value(Datum),
    Function,
    Failed(String),
}

struct Job {
    source: Arc<str>,
    task: Task,
    timeout: Duration,
    reply: flume::Sender<Outcome>,
}

/// The `timeout` optarg: seconds, at least 0.
pub fn timeout_arg(d: Option<Datum>) -> Result<Duration> {
    let secs = match d {
        None => TIMEOUT_DEFAULT_SECS,
        Some(d) => super::num(&d)?,
    };
    if !secs.is_finite() || !(0.0..=u32::MAX as f64).contains(&secs) {
        return Err(logic(format!(
            "Invalid timeout of {} seconds.",
            super::fmt_g20(secs)
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn run(job_source: Arc<str>, task: Task, timeout: Duration) -> Result<Outcome> {
    let Some(pool) = POOL.get() else {
        return Err(logic(
            "`r.js` is disabled on this server (start it with --enable-js to run JavaScript).",
        ));
    };
    pool.ask(|reply| Job {
        source: job_source,
        task,
        timeout,
        reply,
    })
    .map_err(|s| match s {
        Stopped::Gone => logic("The JavaScript workers have stopped."),
        Stopped::Dropped => logic("A JavaScript worker stopped while running a script."),
        Stopped::Interrupted => crate::error::ReqlError::from(rdb_io::control::Stop::Interrupted),
    })
}

/// `r.js(source)`: the script's value, or a function when it evaluates to one.
pub fn eval(source: &str, timeout: Duration) -> Result<Val> {
    let source: Arc<str> = source.into();
    match run(source.clone(), Task::Eval, timeout)? {
        Outcome::Value(d) => Ok(Val::Datum(d)),
        Outcome::Failed(msg) => Err(logic(msg)),
        Outcome::Function => {
            // The body is the r.js term itself: what `deterministic` and stored
            // functions see.
            let body = Rc::new(Term::Op(Op {
                ty: tt::JAVASCRIPT,
                args: vec![Rc::new(Term::Datum(Datum::str(&*source)))],
                optargs: vec![(
                    "timeout".into(),
                    Rc::new(Term::Datum(Datum::Num(timeout.as_secs_f64()))),
                )],
            }));
            Ok(Val::Func(Rc::new(Func {
                params: Vec::new(),
                body,
                env: Env::default(),
                js: Some(Rc::new(JsFunc { source, timeout })),
            })))
        }
    }
}

/// Calls a function `r.js` returned.
pub fn call(_ctx: &Rc<Ctx>, f: &JsFunc, args: &[Datum]) -> Result<Val> {
    match run(f.source.clone(), Task::Call(args.to_vec()), f.timeout)? {
        Outcome::Value(d) => Ok(Val::Datum(d)),
        Outcome::Failed(msg) => Err(logic(msg)),
        Outcome::Function => Err(logic("Cannot convert javascript function to ql::datum_t.")),
    }
}

// ---- worker side ----

/// One runtime and what it has compiled.
struct Engine {
    // Fields drop in order: values before their context, the context before its runtime
    // (QuickJS asserts that a runtime outlives every object).
    functions: HashMap<Arc<str>, Persistent<Function<'static>>>,
    context: Context,
    runtime: Runtime,
    /// Milliseconds since `epoch` after which the running script is interrupted.
    deadline_ms: Arc<AtomicU64>,
    interrupted: Arc<AtomicBool>,
    epoch: Instant,
}

impl Engine {
    fn new(memory_bytes_max: usize) -> Option<Engine> {
        let runtime = Runtime::new().ok()?;
        runtime.set_memory_limit(memory_bytes_max);
        runtime.set_max_stack_size(STACK_BYTES_MAX);
        let deadline_ms = Arc::new(AtomicU64::new(u64::MAX));
        let interrupted = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let (d, i) = (deadline_ms.clone(), interrupted.clone());
        runtime.set_interrupt_handler(Some(Box::new(move || {
            let now = epoch.elapsed().as_millis() as u64;
            let stop = now >= d.load(Ordering::Relaxed);
            if stop {
                i.store(true, Ordering::Relaxed);
            }
            stop
        })));
        let context = Context::full(&runtime).ok()?;
        Some(Engine {
            functions: HashMap::new(),
            context,
            runtime,
            deadline_ms,
            interrupted,
            epoch,
        })
    }

    fn run(&mut self, job: &Job) -> Outcome {
        let deadline = self.epoch.elapsed() + job.timeout;
        self.deadline_ms
            .store(deadline.as_millis() as u64, Ordering::Relaxed);
        self.interrupted.store(false, Ordering::Relaxed);
        let functions = &mut self.functions;
        let out = self
            .context
            .with(|ctx| -> std::result::Result<Outcome, String> {
                let fail = |e: rquickjs::Error| describe(&ctx, e);
                match &job.task {
                    Task::Eval => {
                        let v: Value = sloppy_eval(&ctx, &job.source).map_err(fail)?;
                        if v.is_function() {
                            return Ok(Outcome::Function);
                        }
                        to_datum(&ctx, &v, 0).map(Outcome::Value)
                    }
                    Task::Call(args) => {
                        let f = match functions.get(&job.source) {
                            Some(p) => p.clone().restore(&ctx).map_err(fail)?,
                            None => {
                                let v: Value = sloppy_eval(&ctx, &job.source).map_err(fail)?;
                                let Some(f) = v.as_function().cloned() else {
                                    return Err("The r.js value is not a function.".into());
                                };
                                if functions.len() >= FUNCTION_CACHE_MAX {
                                    functions.clear();
                                }
                                functions
                                    .insert(job.source.clone(), Persistent::save(&ctx, f.clone()));
                                f
                            }
                        };
                        let mut js_args = Vec::with_capacity(args.len());
                        for a in args {
                            js_args.push(to_js(&ctx, a, 0).map_err(fail)?);
                        }
                        let v: Value = f.call((Rest(js_args),)).map_err(fail)?;
                        if v.is_function() {
                            return Ok(Outcome::Function);
                        }
                        to_datum(&ctx, &v, 0).map(Outcome::Value)
                    }
                }
            });
        self.deadline_ms.store(u64::MAX, Ordering::Relaxed);
        match out {
            Ok(o) => o,
            Err(msg) => Outcome::Failed(msg),
        }
    }

    /// Whether the last script hit its time limit.
    fn timed_out(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }
}

fn worker(jobs: flume::Receiver<Job>, memory_bytes_max: usize) {
    let mut engine: Option<Engine> = None;
    while let Ok(job) = jobs.recv() {
        if engine.is_none() {
            engine = Engine::new(memory_bytes_max);
        }
        let Some(e) = engine.as_mut() else {
            let _ = job
                .reply
                .send(Outcome::Failed("Cannot start a JavaScript runtime.".into()));
            continue;
        };
        let mut outcome = e.run(&job);
        let timed_out = e.timed_out();
        let out_of_memory = matches!(&outcome, Outcome::Failed(m) if m.contains("out of memory"));
        if timed_out {
            outcome = Outcome::Failed(format!(
                "JavaScript query `{}` timed out after {:.3} seconds.",
                job.source,
                job.timeout.as_secs_f64()
            ));
        } else if out_of_memory {
            outcome = Outcome::Failed(format!(
                "JavaScript query `{}` ran out of memory (the limit is {} MiB).",
                job.source,
                memory_bytes_max >> 20
            ));
        }
        if timed_out || out_of_memory {
            // Start the next script on a clean heap.
            engine = None;
        } else {
            e.runtime.run_gc();
        }
        let _ = job.reply.send(outcome);
    }
}

/// Evaluates a script as RethinkDB does: global code, not strict (assigning an
/// undeclared variable creates a global, as old scripts expect).
fn sloppy_eval<'js>(ctx: &rquickjs::Ctx<'js>, source: &str) -> rquickjs::Result<Value<'js>> {
    let mut opts = rquickjs::context::EvalOptions::default();
    opts.global = true;
    opts.strict = false;
    ctx.eval_with_options(source.as_bytes().to_vec(), opts)
}

/// An engine error in JavaScript's words (`SyntaxError: ...`).
fn describe(ctx: &rquickjs::Ctx<'_>, e: rquickjs::Error) -> String {
    if matches!(e, rquickjs::Error::Exception) {
        let ex = ctx.catch();
        if let Some(o) = ex.as_object() {
            let name: Option<String> = o.get("name").ok();
            let message: Option<String> = o.get("message").ok();
            if let (Some(n), Some(m)) = (name, message) {
                return format!("{n}: {m}");
            }
        }
        if let Some(s) = ex.as_string().and_then(|s| s.to_string().ok()) {
            return s;
        }
        return "JavaScript exception".into();
    }
    e.to_string()
}

fn to_datum<'js>(
    ctx: &rquickjs::Ctx<'js>,
    v: &Value<'js>,
    depth: usize,
) -> std::result::Result<Datum, String> {
    if depth > DEPTH_MAX {
        return Err("JavaScript value is nested too deeply.".into());
    }
    if v.is_undefined() {
        return Err("Cannot convert javascript `undefined` to ql::datum_t.".into());
    }
    if v.is_null() {
        return Ok(Datum::Null);
    }
    if let Some(b) = v.as_bool() {
        return Ok(Datum::Bool(b));
    }
    if let Some(n) = v.as_number() {
        if !n.is_finite() {
            return Err(format!("Number return value is not finite: {n}"));
        }
        return Ok(Datum::Num(n));
    }
    if let Some(s) = v.as_string() {
        return s.to_string().map(Datum::str).map_err(|e| e.to_string());
    }
    if v.is_function() {
        return Err("Cannot convert javascript function to ql::datum_t.".into());
    }
    if let Some(a) = v.as_array() {
        let mut out = Vec::with_capacity(a.len());
        for i in 0..a.len() {
            let x: Value = a.get(i).map_err(|e| describe(ctx, e))?;
            out.push(to_datum(ctx, &x, depth + 1)?);
        }
        return Ok(Datum::array(out));
    }
    if let Some(o) = v.as_object() {
        if is_date(ctx, v) {
            let ms: f64 = o
                .get::<_, Function>("getTime")
                .and_then(|f| f.call((rquickjs::function::This(o.clone()),)))
                .map_err(|e| describe(ctx, e))?;
            if !ms.is_finite() {
                return Err("Invalid Date cannot be converted to a time.".into());
            }
            return super::time::make(ms / 1000.0, 0).map_err(|e| e.msg);
        }
        let mut m = Object::new();
        for prop in o.props::<String, Value>() {
            let (k, x) = prop.map_err(|e| describe(ctx, e))?;
            m.insert(k, to_datum(ctx, &x, depth + 1)?);
        }
        return crate::json::finish_object(m).map_err(|e| e.msg);
    }
    Err(format!(
        "Cannot convert javascript value of type {} to ql::datum_t.",
        v.type_of()
    ))
}

fn is_date<'js>(ctx: &rquickjs::Ctx<'js>, v: &Value<'js>) -> bool {
    let Ok(date) = ctx.globals().get::<_, rquickjs::Constructor>("Date") else {
        return false;
    };
    v.as_object().is_some_and(|o| o.is_instance_of(&date))
}

fn to_js<'js>(ctx: &rquickjs::Ctx<'js>, d: &Datum, depth: usize) -> rquickjs::Result<Value<'js>> {
    use rquickjs::IntoJs;
    if depth > DEPTH_MAX {
        return Err(rquickjs::Error::new_from_js_message(
            "datum",
            "value",
            "nested too deeply",
        ));
    }
    Ok(match d {
        Datum::Null | Datum::MinVal | Datum::MaxVal => Value::new_null(ctx.clone()),
        Datum::Bool(b) => b.into_js(ctx)?,
        Datum::Num(n) => n.into_js(ctx)?,
        Datum::Str(s) => (&**s).into_js(ctx)?,
        Datum::Array(a) => {
            let arr = rquickjs::Array::new(ctx.clone())?;
            for (i, x) in a.iter().enumerate() {
                arr.set(i, to_js(ctx, x, depth + 1)?)?;
            }
            arr.into_value()
        }
        Datum::Object(o) if d.reql_type() == Some("TIME") => {
            let epoch = o.get("epoch_time").and_then(Datum::as_num).unwrap_or(0.0);
            let date: rquickjs::Constructor = ctx.globals().get("Date")?;
            date.construct::<_, Value>((epoch * 1000.0,))?
        }
        Datum::Object(o) => {
            let obj = rquickjs::Object::new(ctx.clone())?;
            for (k, x) in o.iter() {
                obj.set(&**k, to_js(ctx, x, depth + 1)?)?;
            }
            obj.into_value()
        }
        Datum::Binary(b) => {
            // As its JSON form: {"$reql_type$": "BINARY", "data": base64}.
            let obj = rquickjs::Object::new(ctx.clone())?;
            obj.set(REQL_TYPE, "BINARY")?;
            obj.set("data", crate::json::encode_base64(b))?;
            obj.into_value()
        }
    })
}
