//! Open-a-secret throughput: unwrap the data key and decrypt a 64-byte value.
//! Target (issue 2): at least 100,000 per second on one core.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gateway::vault::envelope::{self, Binding};
use gateway::vault::{MasterKey, SecretValue};

fn open_secret(c: &mut Criterion) {
    let master = MasterKey::from_bytes(&[42; 32]);
    let binding = Binding {
        id: "0123456789abcdef0123456789abcdef",
        name: "GITHUB_TOKEN",
        version: 3,
    };
    let value = SecretValue::from(&[0x5a; 64][..]);
    let sealed = envelope::seal(&master, binding, &value).expect("seal");
    let mut group = c.benchmark_group("vault");
    group.throughput(Throughput::Elements(1));
    group.bench_function("open_64_byte_secret", |b| {
        b.iter(|| envelope::open(&master, binding, std::hint::black_box(&sealed)).expect("open"))
    });
    group.bench_function("seal_64_byte_secret", |b| {
        b.iter(|| envelope::seal(&master, binding, std::hint::black_box(&value)).expect("seal"))
    });
    group.finish();
}

criterion_group!(benches, open_secret);
criterion_main!(benches);
