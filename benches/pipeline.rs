//! In-process throughput: an fbp flow against a hand-written tokio pipeline of
//! the same shape doing the same jq work, side by side; and the runtime's cost
//! per hop, with a pass-through component that does no work of its own.
//!
//! `cargo bench --bench pipeline`; figures are recorded in docs/BENCHMARKS.md.

#![allow(missing_docs)]

use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fbp_runtime::flow::check::check_source;
use fbp_runtime::network::{RunOptions, run};
use fbp_runtime::spec::{Acks, BuildContext, Catalogue, ComponentSpec, Delivery, Kind, PortSpec};
use fbp_runtime::{Instance, Message, Outbox, Transform, value};
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data};
use jaq_json::Val;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const N: u64 = 200_000;

struct Pass;

impl Transform for Pass {
    fn process(&mut self, msg: &Message, out: &mut Outbox) -> Result<(), String> {
        out.send(msg.clone());
        Ok(())
    }
}

static PASS: ComponentSpec = ComponentSpec {
    name: "pass",
    summary: "Pass messages on unchanged (benchmark only).",
    doc: "Does nothing; measures the runtime's own cost per hop.",
    kind: Kind::Transform,
    inputs: &[PortSpec { name: "in", ty: "any", doc: "" }],
    outputs: &[PortSpec { name: "out", ty: "same", doc: "" }],
    config: &[],
    delivery: Delivery::PassThrough,
    acks: Acks::Prompt,
    stateless: true,
    example: "",
    build: |_: &BuildContext| Ok(Instance::transform(Pass)),
    ports: None,
    probe: None,
};

static BENCH: Catalogue = Catalogue(&[
    &fbp_components::generate::counter::SPEC,
    &fbp_components::transform::map::SPEC,
    &fbp_components::transform::filter::SPEC,
    &fbp_components::output::null::SPEC,
    &PASS,
]);

fn run_pipeline(pipeline: &str) {
    let text = fbp_runtime::launch::to_flow_toml(pipeline, &BENCH).expect("pipeline parses");
    let flow = check_source("<bench>", &text, Path::new("."), &BENCH, &|_| None).expect("flow checks");
    let report = run(flow, RunOptions::default());
    report.result.expect("flow runs");
    assert_eq!(report.summaries.last().map(|s| s.received), Some(N), "every message arrives");
}

type D = data::JustLut<Val>;

fn compile(code: &str) -> jaq_core::Filter<D> {
    let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
    let funs = jaq_core::funs::<D>().chain(jaq_std::funs()).chain(jaq_json::funs());
    let arena = Arena::default();
    let modules = Loader::new(defs).load(&arena, File { code, path: () }).expect("parses");
    Compiler::<_, D>::default().with_funs(funs).compile(modules).expect("compiles")
}

fn first(f: &jaq_core::Filter<D>, v: Val) -> Option<Val> {
    let ctx = Ctx::<D>::new(&f.lut, Vars::new([]));
    f.id.run((ctx, v)).next().and_then(|r| jaq_core::unwrap_valr(r).ok())
}

/// The hand-written baseline: four tokio tasks joined by bounded channels,
/// one message at a time, the same payloads and the same jq programs.
fn baseline() -> u64 {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let (tx1, mut rx1) = tokio::sync::mpsc::channel::<Val>(1000);
        let (tx2, mut rx2) = tokio::sync::mpsc::channel::<Val>(1000);
        let (tx3, mut rx3) = tokio::sync::mpsc::channel::<Val>(1000);
        tokio::spawn(async move {
            for n in 1..=N {
                let v = value::object([("count", value::int(n as i64))]);
                if tx1.send(v).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let map = compile(".");
            while let Some(v) = rx1.recv().await {
                if let Some(out) = first(&map, v) {
                    let _ = tx2.send(out).await;
                }
            }
        });
        tokio::spawn(async move {
            let filter = compile("true");
            while let Some(v) = rx2.recv().await {
                if first(&filter, v.clone()).is_some_and(|t| value::truthy(&t)) {
                    let _ = tx3.send(v).await;
                }
            }
        });
        let mut count = 0;
        while rx3.recv().await.is_some() {
            count += 1;
        }
        count
    })
}

/// The same baseline moving batches of 64 between the stages.
fn baseline_batched() -> u64 {
    const B: usize = 64;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let (tx1, mut rx1) = tokio::sync::mpsc::channel::<Vec<Val>>(1000 / B);
        let (tx2, mut rx2) = tokio::sync::mpsc::channel::<Vec<Val>>(1000 / B);
        let (tx3, mut rx3) = tokio::sync::mpsc::channel::<Vec<Val>>(1000 / B);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(B);
            for n in 1..=N {
                batch.push(value::object([("count", value::int(n as i64))]));
                if batch.len() == B && tx1.send(std::mem::replace(&mut batch, Vec::with_capacity(B))).await.is_err() {
                    return;
                }
            }
            let _ = tx1.send(batch).await;
        });
        tokio::spawn(async move {
            let map = compile(".");
            while let Some(batch) = rx1.recv().await {
                let _ = tx2.send(batch.into_iter().filter_map(|v| first(&map, v)).collect()).await;
            }
        });
        tokio::spawn(async move {
            let filter = compile("true");
            while let Some(batch) = rx2.recv().await {
                let keep = |v: &Val| first(&filter, v.clone()).is_some_and(|t| value::truthy(&t));
                let _ = tx3.send(batch.into_iter().filter(keep).collect()).await;
            }
        });
        let mut count = 0;
        while let Some(batch) = rx3.recv().await {
            count += batch.len() as u64;
        }
        count
    })
}

fn throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("counter-map-filter-null");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("fbp", |b| {
        b.iter(|| run_pipeline(&format!("counter interval=0s max_count={N} ! map expr=. ! filter expr=true ! null")))
    });
    g.bench_function("hand-written-tokio", |b| b.iter(|| assert_eq!(baseline(), N)));
    g.bench_function("hand-written-tokio-batched", |b| b.iter(|| assert_eq!(baseline_batched(), N)));
    g.finish();
}

fn per_hop(c: &mut Criterion) {
    let mut g = c.benchmark_group("hops");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10).measurement_time(Duration::from_secs(15));
    for hops in [0usize, 4] {
        let middle: String = (0..hops).map(|_| " ! pass").collect();
        let pipeline = format!("counter interval=0s max_count={N}{middle} ! null");
        g.bench_function(format!("{hops}-pass-hops"), |b| b.iter(|| run_pipeline(&pipeline)));
    }
    g.finish();
}

criterion_group!(benches, throughput, per_hop);
criterion_main!(benches);
