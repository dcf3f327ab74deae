fn main() {
    println!("corescope");
}
