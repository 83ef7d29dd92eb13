//! Tests of the BTF reader: synthetic blobs (`synthetic`), minimized real
//! kernels (`kernels`), and the tooling that makes those fixtures.

mod builder;
mod kernels;
mod minimize;
mod synthetic;
