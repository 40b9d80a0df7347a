/// A value bound to or read from a SQL statement. The store uses only these types so that the same
/// statements run on SQLite and PostgreSQL: text, 64-bit integers, doubles, NULL.
package enum SQLValue: Sendable, Equatable {
    case null
    case int(Int64)
    case double(Double)
    case text(String)

    package var int: Int64? {
        switch self {
        case .int(let v): v
        case .text(let s): Int64(s)
        case .double(let d): Int64(exactly: d)
        case .null: nil
        }
    }

    package var double: Double? {
        switch self {
        case .double(let v): v
        case .int(let v): Double(v)
        case .text(let s): Double(s)
        case .null: nil
        }
    }

    package var text: String? {
        switch self {
        case .text(let s): s
        case .int(let v): String(v)
        case .double(let d): String(d)
        case .null: nil
        }
    }
}

/// One result row, columns by name.
package struct SQLRow: Sendable {
    package var columns: [String: SQLValue]
    package subscript(_ name: String) -> SQLValue { columns[name] ?? .null }
}

package enum SQLError: Error, CustomStringConvertible, Sendable {
    /// The statement failed (constraint, syntax...): retrying will not help.
    case statement(String)
    /// The connection is broken (server restarted, network): the operation may be retried.
    case connection(String)

    package var description: String {
        switch self {
        case .statement(let m): "SQL error: \(m)"
        case .connection(let m): "database connection error: \(m)"
        }
    }
}

/// A connection to one database, used from one thread at a time (the store serializes access on
/// its own thread pool). Statements use `$1, $2, ...` placeholders on both backends.
package protocol SQLDatabase: AnyObject {
    /// "sqlite" or "postgresql".
    var backend: String { get }
    @discardableResult
    func execute(_ sql: String, _ parameters: [SQLValue]) throws(SQLError) -> [SQLRow]
    /// Re-establishes a broken connection (no-op for SQLite).
    func reconnect() throws(SQLError)
}

extension SQLDatabase {
    @discardableResult
    package func execute(_ sql: String) throws(SQLError) -> [SQLRow] { try execute(sql, []) }

    /// Runs `body` between BEGIN and COMMIT; a failure rolls back and is thrown.
    package func transaction(_ body: () throws(SQLError) -> Void) throws(SQLError) {
        try execute("BEGIN")
        do throws(SQLError) {
            try body()
            try execute("COMMIT")
        } catch {
            _ = try? execute("ROLLBACK")
            throw error
        }
    }
}
