mod packet;

fn main() {
    println!("corescope");
}
