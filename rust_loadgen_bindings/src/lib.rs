//! placeholder: filled by the LoadGen issue
