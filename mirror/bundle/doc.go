// Package bundle moves a mirror across an air gap: Export writes one
// pinned snapshot of a mirror as a self-contained bundle file, and Import
// verifies such a file completely, offline, before it installs it as the
// current snapshot of another mirror, atomically.
//
// # Bundle format, version 1
//
// A bundle is a POSIX ustar archive (optionally gzip-compressed: Export
// compresses when the file name ends in ".gz"; the reader recognises gzip
// by its magic bytes). It holds exactly these regular files, in this
// order, and nothing else:
//
//	manifest.json   the Manifest, UTF-8 JSON, at most 256 KiB
//	manifest.sig    optional: {"algorithm":"ed25519","public_key":HEX,"signature":HEX},
//	                an Ed25519 signature over the exact bytes of manifest.json
//	stages.bin      the records, in strictly increasing id order
//
// Every tar header is the canonical one Export writes (mode 0644, uid/gid
// 0, no user or group names, the manifest's creation time as mtime), the
// padding after each file is zero, and the archive ends with two zero
// blocks and then the end of the file. The reader re-encodes each header
// and compares it byte for byte, so every byte of an uncompressed bundle is
// checked: a flipped byte anywhere is refused. (In a gzip bundle the gzip
// header's own metadata is not covered; everything it decompresses to is.)
//
// stages.bin is a sequence of frames, one per stage:
//
//	u32 big-endian   payload length n (1 ≤ n ≤ MaxFramePayload)
//	u32 big-endian   CRC-32C (Castagnoli) of the payload
//	n bytes          payload: a MessagePack array of exactly 3 items:
//	                 [id (str), lifecycle (str: draft|active|deprecated|tombstone|unknown),
//	                  stage JSON (bin)]
//
// and then a trailer: a zero u32 (no frame has length 0) and the 32-byte
// SHA-256 of manifest.json, so even an unsigned manifest is protected
// against damage.
//
// The CRC and the length bounds are checked before anything is decoded,
// and every MessagePack length is checked against the bytes actually left
// before anything is allocated.
//
// The manifest's records_digest is "sha256:" and the hex SHA-256 of
//
//	"noether-mirror bundle records v1\x00"
//	for each record, in id order:
//	    u32 len(id) ‖ id ‖ u32 len(lifecycle) ‖ lifecycle ‖ u64 len(json) ‖ json
//	u64 number of records
//
// (all integers big-endian), so no two different record lists hash the
// same input. The manifest also pins the total, the counts by lifecycle
// and the exact size of stages.bin; a signature over the manifest
// therefore covers every byte of every stage.
//
// A reader refuses a format_version newer than FormatVersion with
// ErrFormatVersion, naming the version it found.
package bundle
