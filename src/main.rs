#[allow(dead_code)]
mod derive;
#[allow(dead_code)]
mod edges;
mod packet;
#[allow(dead_code)]
mod resolve;

fn main() {
    println!("corescope");
}
