pub mod image; pub mod generate;
