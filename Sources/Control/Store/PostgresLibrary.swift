import CLibPQ

/// Facts about the libpq the PostgreSQL store links against.
public enum PostgresLibrary {
    /// libpq's version as an integer, e.g. 150018 for 15.18.
    public static var version: Int { Int(PQlibVersion()) }
    /// Whether libpq was built thread-safe (required: queries run on a thread pool).
    public static var isThreadSafe: Bool { PQisthreadsafe() == 1 }
}
