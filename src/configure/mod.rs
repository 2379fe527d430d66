//! Declarative system set-up: what maintainer scripts and first-boot tools would have
//! done, done on the tree instead.
