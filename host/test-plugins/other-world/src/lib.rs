//! A well-formed component that implements another world
//! (`atoll-test:other/greeter`): atoll must refuse it as a plugin.

// wit-bindgen's generated ABI glue is unsafe by nature.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ world: "greeter", path: "wit", pub_export_macro: true });
}

struct Greeter;

impl bindings::Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello, {name}")
    }
}

#[allow(unsafe_code)]
const _: () = {
    bindings::export!(Greeter with_types_in bindings);
};
