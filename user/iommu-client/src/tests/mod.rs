mod canned;
mod window;
