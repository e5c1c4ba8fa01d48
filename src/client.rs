//! chat-client: the seed's terminal client (work in progress).
