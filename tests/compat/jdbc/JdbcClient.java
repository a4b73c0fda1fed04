// pgjdbc against a running Tessera coordinator: prepared statements (including the
// server-prepared ones pgjdbc switches to after five executions), batch insert, a
// transaction, and DatabaseMetaData. Usage: java -cp postgresql.jar:. JdbcClient PORT
import java.sql.*;
import java.util.*;

public class JdbcClient {
    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/postgres?user=postgres";
        try (Connection c = DriverManager.getConnection(url)) {
            try (Statement s = c.createStatement()) {
                s.execute("DROP TABLE IF EXISTS jdbc_items");
                s.execute("CREATE TABLE jdbc_items (id bigint PRIMARY KEY, name text NOT NULL, price double precision) PARTITION BY HASH (id)");
            }
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO jdbc_items VALUES (?, ?, ?)")) {
                for (int i = 1; i <= 50; i++) {
                    ins.setLong(1, i);
                    ins.setString(2, "item" + i);
                    ins.setDouble(3, i * 1.5);
                    ins.addBatch();
                }
                int[] counts = ins.executeBatch();
                check(counts.length == 50, "batch size");
            }
            try (PreparedStatement q = c.prepareStatement("SELECT name, price FROM jdbc_items WHERE id = ?")) {
                for (int i = 1; i <= 10; i++) {
                    q.setLong(1, i);
                    try (ResultSet rs = q.executeQuery()) {
                        check(rs.next(), "row " + i);
                        check(rs.getString(1).equals("item" + i), "name " + i);
                        check(rs.getDouble(2) == i * 1.5, "price " + i);
                    }
                }
            }
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                s.executeUpdate("UPDATE jdbc_items SET price = 0 WHERE id <= 10");
            }
            c.rollback();
            c.setAutoCommit(true);
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT count(*) FROM jdbc_items WHERE price = 0")) {
                rs.next();
                check(rs.getLong(1) == 0, "rollback");
            }
            DatabaseMetaData md = c.getMetaData();
            List<String> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE"})) {
                while (rs.next()) tables.add(rs.getString("TABLE_NAME"));
            }
            check(tables.contains("jdbc_items"), "getTables: " + tables);
            List<String> cols = new ArrayList<>();
            try (ResultSet rs = md.getColumns(null, "public", "jdbc_items", "%")) {
                while (rs.next()) cols.add(rs.getString("COLUMN_NAME") + ":" + rs.getString("TYPE_NAME"));
            }
            check(cols.equals(List.of("id:int8", "name:text", "price:float8")), "getColumns: " + cols);
        }
        System.out.println("jdbc ok");
    }
}
