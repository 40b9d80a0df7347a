import CLibPQ

/// Facts about the libpq the PostgreSQL store links against.
package enum PostgresLibrary {
    /// libpq's version as an integer, e.g. 150018 for 15.18.
    package static var version: Int { Int(PQlibVersion()) }
    /// Whether libpq was built thread-safe (required: queries run on a thread pool).
    package static var isThreadSafe: Bool { PQisthreadsafe() == 1 }
}
