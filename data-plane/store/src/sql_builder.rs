//! [`SqlBuilder`]: dynamic SQL for both engines.

use std::fmt;

use sqlx::{
    AssertSqlSafe, Encode, Type,
    any::{Any, AnyArguments},
};

/// Dynamic SQL with numbered placeholders (`$1`, `$2`, ...), which both engines accept. Use it
/// instead of sqlx's `QueryBuilder<Any>`, whose `?` placeholders PostgreSQL rejects.
///
/// SQL text is `&'static str` only, so a value can never be spliced into the statement; values go
/// through [`SqlBuilder::push_bind`].
pub struct SqlBuilder {
    sql: String,
    args: AnyArguments,
    /// The first value that could not be encoded; reported when the query runs.
    error: Option<sqlx::error::BoxDynError>,
}

impl fmt::Debug for SqlBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlBuilder")
            .field("sql", &self.sql)
            .finish_non_exhaustive()
    }
}

impl SqlBuilder {
    pub fn new(sql: &'static str) -> SqlBuilder {
        SqlBuilder {
            sql: sql.to_owned(),
            args: AnyArguments::default(),
            error: None,
        }
    }

    /// Appends SQL text.
    pub fn push(&mut self, sql: &'static str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends a placeholder for `value`.
    pub fn push_bind<'t, T>(&mut self, value: T) -> &mut Self
    where
        T: Encode<'t, Any> + Type<Any>,
    {
        use sqlx::Arguments as _;
        if let Err(e) = self.args.add(value) {
            self.error.get_or_insert(e);
        }
        // Writing to a String cannot fail.
        let _ = fmt::Write::write_fmt(&mut self.sql, format_args!("${}", self.args.len()));
        self
    }

    /// Appends `$n, $n+1, ...`, one placeholder per value (for `IN (...)`).
    pub fn push_binds<'t, T>(&mut self, values: impl IntoIterator<Item = T>) -> &mut Self
    where
        T: Encode<'t, Any> + Type<Any>,
    {
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.push_bind(value);
        }
        self
    }

    /// The query, ready to run; [`sqlx::Error::Encode`] if a value could not be encoded.
    pub fn build(self) -> Result<sqlx::query::Query<'static, Any, AnyArguments>, sqlx::Error> {
        let (sql, args) = self.into_parts()?;
        Ok(sqlx::query_with(sql, args))
    }

    /// The query for one column of one row per result; errors as [`SqlBuilder::build`].
    pub fn build_scalar<O>(
        self,
    ) -> Result<sqlx::query::QueryScalar<'static, Any, O, AnyArguments>, sqlx::Error>
    where
        (O,): for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
    {
        let (sql, args) = self.into_parts()?;
        Ok(sqlx::query_scalar_with(sql, args))
    }

    fn into_parts(self) -> Result<(AssertSqlSafe<String>, AnyArguments), sqlx::Error> {
        match self.error {
            Some(e) => Err(sqlx::Error::Encode(e)),
            None => Ok((AssertSqlSafe(self.sql), self.args)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_builder_numbers_its_placeholders() {
        let mut sql = SqlBuilder::new("SELECT id FROM t WHERE a IN (");
        sql.push_binds(["x", "y", "z"]).push(") LIMIT ").push_bind(5_i64);
        assert_eq!(sql.sql, "SELECT id FROM t WHERE a IN ($1, $2, $3) LIMIT $4");
        assert!(sql.build().is_ok());
    }
}
