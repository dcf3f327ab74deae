#[allow(dead_code)]
mod edges;
#[allow(dead_code)]
mod graph;
#[allow(dead_code)]
mod resolve;

fn main() {
    println!("corescope");
}
