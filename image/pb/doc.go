// Package pb holds the generated protobuf code of the lazycr image format.
// Never edit image.pb.go by hand: change image.proto and run go generate.
//
// Generated with protoc 3.21.12 (Debian protobuf-compiler) and
// protoc-gen-go v1.36.12 (go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12).
package pb

//go:generate protoc --go_out=. --go_opt=paths=source_relative image.proto
