"""Wire protocol: message records, the codec, packet security and TCP framing."""
