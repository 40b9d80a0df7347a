import CSQLite
import Foundation

/// The embedded metadata database: one SQLite file (WAL mode) under the data directory.
package final class SQLiteDatabase: SQLDatabase {
    package let backend = "sqlite"
    package let path: String
    private var db: OpaquePointer?

    /// SQLITE_TRANSIENT: SQLite copies bound text before the call returns.
    private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    package init(path: String) throws(SQLError) {
        self.path = path
        if path != ":memory:" {
            try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        }
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        guard sqlite3_open_v2(path, &handle, flags, nil) == SQLITE_OK, let handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(handle)
            throw .connection("cannot open SQLite database \(path): \(message)")
        }
        db = handle
        sqlite3_busy_timeout(handle, 5000)
        try execute("PRAGMA journal_mode=WAL")
        try execute("PRAGMA foreign_keys=ON")
        try execute("PRAGMA synchronous=NORMAL")
    }

    deinit { sqlite3_close(db) }

    package func reconnect() throws(SQLError) {}

    @discardableResult
    package func execute(_ sql: String, _ parameters: [SQLValue]) throws(SQLError) -> [SQLRow] {
        var statement: OpaquePointer?
        // `$n` placeholders are SQLite's `?n`.
        let text = Self.numberedPlaceholders(sql)
        guard sqlite3_prepare_v2(db, text, -1, &statement, nil) == SQLITE_OK, let statement else {
            throw .statement(String(cString: sqlite3_errmsg(db)))
        }
        defer { sqlite3_finalize(statement) }
        for (i, value) in parameters.enumerated() {
            let index = Int32(i + 1)
            let rc: Int32
            switch value {
            case .null: rc = sqlite3_bind_null(statement, index)
            case .int(let v): rc = sqlite3_bind_int64(statement, index, v)
            case .double(let v): rc = sqlite3_bind_double(statement, index, v)
            case .text(let s): rc = sqlite3_bind_text(statement, index, s, -1, Self.transient)
            }
            guard rc == SQLITE_OK else { throw .statement(String(cString: sqlite3_errmsg(db))) }
        }
        var rows: [SQLRow] = []
        while true {
            let rc = sqlite3_step(statement)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else { throw .statement(String(cString: sqlite3_errmsg(db))) }
            var columns: [String: SQLValue] = [:]
            for c in 0..<sqlite3_column_count(statement) {
                let name = String(cString: sqlite3_column_name(statement, c))
                switch sqlite3_column_type(statement, c) {
                case SQLITE_INTEGER: columns[name] = .int(sqlite3_column_int64(statement, c))
                case SQLITE_FLOAT: columns[name] = .double(sqlite3_column_double(statement, c))
                case SQLITE_NULL: columns[name] = .null
                default:
                    columns[name] = sqlite3_column_text(statement, c).map { .text(String(cString: $0)) } ?? .null
                }
            }
            rows.append(SQLRow(columns: columns))
        }
        return rows
    }

    static func numberedPlaceholders(_ sql: String) -> String {
        var out = ""
        var previousWasDollar = false
        for ch in sql {
            if previousWasDollar, !ch.isNumber { out.append("$") }
            if ch == "$" {
                previousWasDollar = true
                continue
            }
            if previousWasDollar, ch.isNumber { out.append("?") }
            previousWasDollar = false
            out.append(ch)
        }
        if previousWasDollar { out.append("$") }
        return out
    }
}
