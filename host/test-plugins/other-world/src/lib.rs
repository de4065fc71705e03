//! A well-formed component that implements another world
//! (`atoll-test:other/greeter`): atoll must refuse it as a plugin.

wit_bindgen::generate!({ world: "greeter", path: "wit" });

struct Greeter;

impl Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello, {name}")
    }
}

export!(Greeter);
