//! nft's JSON (`nft -j`: a listing, or the echo of a transaction) as typed
//! values holding only what portlocker reads: strings borrow from the text
//! (owned only where nft escaped something), and everything else is skipped
//! unread, so reading costs little beyond the text. Pure.
//!
//! The shape is nft's and is held to: a list of objects of one key each.
//! Where a rule's operands take a form portlocker does not know, they read
//! as `Operand::Other`, so the rule is not one of portlocker's.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The objects of `{"nftables": [...]}`; Err saying why when `text` is not that.
pub fn objects(text: &str) -> Result<Vec<Object<'_>>, String> {
    #[derive(Deserialize)]
    struct Document<'a> {
        #[serde(borrow)]
        nftables: Vec<Object<'a>>,
    }
    match serde_json::from_str::<Document>(text) {
        Ok(document) => Ok(document.nftables),
        Err(error) if error.is_data() => Err(format!("not what nft lists: {error}")),
        Err(error) => Err(format!("not JSON: {error}")),
    }
}

/// A string of the text: borrowed, or owned where nft escaped something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Str<'a>(pub Cow<'a, str>);

impl Deref for Str<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// The text of `field`, "" when it is absent.
pub fn text<'s>(field: &'s Option<Str<'_>>) -> &'s str {
    field.as_deref().unwrap_or("")
}

/// One element of the list: an object of one key, its kind.
#[derive(Debug)]
pub enum Object<'a> {
    Table(Named<'a>),
    Chain(Chain<'a>),
    Rule(Rule<'a>),
    /// What a transaction added, as nft's echo of it tells.
    Add(Box<Object<'a>>),
    /// Any other kind (`metainfo`, `set`, `map`, `counter`, a command other
    /// than `add`…): the kind, and whose it is.
    Other(Str<'a>, Named<'a>),
}

impl Object<'_> {
    /// Its kind, as nft names it.
    pub fn kind(&self) -> &str {
        match self {
            Object::Table(_) => "table",
            Object::Chain(_) => "chain",
            Object::Rule(_) => "rule",
            Object::Add(_) => "add",
            Object::Other(kind, _) => kind,
        }
    }
}

/// Whose an object is, and its name.
#[derive(Debug, Default, Deserialize)]
pub struct Named<'a> {
    #[serde(borrow)]
    pub family: Option<Str<'a>>,
    #[serde(borrow)]
    pub table: Option<Str<'a>>,
    #[serde(borrow)]
    pub name: Option<Str<'a>>,
    /// A table's flags (`dormant`: its chains see nothing), whatever nft
    /// prints for them — nft 1.0.6 prints the table's name there.
    #[serde(default)]
    pub flags: Option<IgnoredAny>,
}

/// A chain, and how it is hooked.
#[derive(Debug, Deserialize)]
pub struct Chain<'a> {
    #[serde(borrow)]
    pub family: Option<Str<'a>>,
    #[serde(borrow)]
    pub table: Option<Str<'a>>,
    #[serde(borrow)]
    pub name: Option<Str<'a>>,
    #[serde(borrow, rename = "type")]
    pub kind: Option<Str<'a>>,
    #[serde(borrow)]
    pub hook: Option<Str<'a>>,
    #[serde(borrow)]
    pub policy: Option<Str<'a>>,
    pub prio: Option<i64>,
}

/// A rule: where it is, and its statements in order.
#[derive(Debug, Deserialize)]
pub struct Rule<'a> {
    #[serde(borrow)]
    pub family: Option<Str<'a>>,
    #[serde(borrow)]
    pub table: Option<Str<'a>>,
    #[serde(borrow)]
    pub chain: Option<Str<'a>>,
    pub handle: Option<u64>,
    #[serde(borrow)]
    pub comment: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub expr: Vec<Expr<'a>>,
}

/// One statement of a rule.
#[derive(Debug)]
pub enum Expr<'a> {
    /// `left op right`.
    Match(Match<'a>),
    /// `accept`, `drop`, `reject`, `return`, `queue`, or `jump`/`goto` with
    /// its target.
    Verdict { kind: Str<'a>, target: Operand<'a> },
    /// Any other statement (`counter`, `log`, `limit`…), or a value of
    /// another form.
    Other,
}

/// `left op right`: each `Other` when it is of no form portlocker writes.
#[derive(Debug)]
pub struct Match<'a> {
    pub op: Operand<'a>,
    pub left: Operand<'a>,
    pub right: Operand<'a>,
}

/// A value a match compares, in the forms portlocker's rules use.
#[derive(Debug, PartialEq, Eq)]
pub enum Operand<'a> {
    Text(Str<'a>),
    /// A whole number that is not negative.
    Number(u64),
    List(Vec<Operand<'a>>),
    /// `{"meta": {"key": K}}`
    Meta(Str<'a>),
    /// `{"ct": {"key": K}}`
    Ct(Str<'a>),
    /// `{"ct": {"key": K, "dir": "original"}}`: of the connection's first
    /// direction, as it was before any translation.
    CtOriginal(Str<'a>),
    /// `{"payload": {"protocol": P, "field": F}}`
    Payload {
        protocol: Str<'a>,
        field: Str<'a>,
    },
    /// `{"prefix": {"addr": A, "len": N}}`
    Prefix {
        addr: Str<'a>,
        len: u64,
    },
    /// `{"range": [A, B]}`
    Range(Vec<Operand<'a>>),
    /// `{"&": [A, B]}`
    And(Vec<Operand<'a>>),
    /// Anything else, unread.
    Other,
}

impl Operand<'_> {
    pub fn text(&self) -> Option<&str> {
        match self {
            Operand::Text(text) => Some(text),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Strings<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Strings<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(text)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(Strings(PhantomData))
    }
}

/// The key of an object of one key, then its value as `value` reads it;
/// Err for an object of no key or of more.
fn one_key<'de, A: MapAccess<'de>, T>(
    mut map: A,
    value: impl FnOnce(&Str<'de>, &mut A) -> Result<T, A::Error>,
) -> Result<T, A::Error> {
    let Some(key) = map.next_key::<Str<'de>>()? else {
        return Err(de::Error::custom("an object of no key"));
    };
    let read = value(&key, &mut map)?;
    if map.next_key::<IgnoredAny>()?.is_some() {
        return Err(de::Error::custom(format!(
            "an object of more keys than `{}`",
            &*key
        )));
    }
    Ok(read)
}

impl<'de: 'a, 'a> Deserialize<'de> for Object<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Objects<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Objects<'a> {
            type Value = Object<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of one key")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<'a>, A::Error> {
                one_key(map, |key, map| {
                    Ok(match &**key {
                        "table" => Object::Table(map.next_value()?),
                        "chain" => Object::Chain(map.next_value()?),
                        "rule" => Object::Rule(map.next_value()?),
                        "add" => Object::Add(Box::new(map.next_value()?)),
                        _ => Object::Other(key.clone(), map.next_value()?),
                    })
                })
            }
        }
        deserializer.deserialize_map(Objects(PhantomData))
    }
}

/// Visitor methods that read a value of each listed kind as `$value`,
/// skipping what it holds: statements and operands of forms portlocker does
/// not write read as such, never as an error.
macro_rules! otherwise {
    ($value:expr; $($kind:ident)*) => { $(otherwise!(@ $kind $value);)* };
    (@bool $value:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> { Ok($value) }
    };
    (@i64 $value:expr) => {
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> { Ok($value) }
    };
    (@u64 $value:expr) => {
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> { Ok($value) }
    };
    (@f64 $value:expr) => {
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> { Ok($value) }
    };
    (@str $value:expr) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> { Ok($value) }
    };
    (@unit $value:expr) => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> { Ok($value) }
    };
    (@seq $value:expr) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($value)
        }
    };
}

/// The values of the fields `names` of an object, in that order (`Other`
/// for one it lacks, and for all when it is not an object); its other
/// fields are skipped.
struct Fields<'a, const N: usize>([&'static str; N], PhantomData<&'a ()>);

impl<'de: 'a, 'a, const N: usize> DeserializeSeed<'de> for Fields<'a, N> {
    type Value = [Operand<'a>; N];

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de: 'a, 'a, const N: usize> Visitor<'de> for Fields<'a, N> {
    type Value = [Operand<'a>; N];

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut values = std::array::from_fn(|_| Operand::Other);
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match self.0.iter().position(|name| *name == &*key) {
                Some(index) => values[index] = map.next_value()?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(values)
    }

    otherwise!(std::array::from_fn(|_| Operand::Other); bool i64 u64 f64 str unit seq);
}

/// The fields `names` of the value that comes next in `map`.
fn fields<'de: 'a, 'a, A: MapAccess<'de>, const N: usize>(
    map: &mut A,
    names: [&'static str; N],
) -> Result<[Operand<'a>; N], A::Error> {
    map.next_value_seed(Fields(names, PhantomData))
}

impl<'de: 'a, 'a> Deserialize<'de> for Expr<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Exprs<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Exprs<'a> {
            type Value = Expr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a statement")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Expr<'a>, A::Error> {
                let Some(key) = map.next_key::<Str<'de>>()? else {
                    return Ok(Expr::Other);
                };
                let expr = match &*key {
                    "match" => {
                        let [op, left, right] = fields(&mut map, ["op", "left", "right"])?;
                        Expr::Match(Match { op, left, right })
                    }
                    "accept" | "drop" | "reject" | "return" | "queue" => {
                        map.next_value::<IgnoredAny>()?;
                        Expr::Verdict {
                            kind: key,
                            target: Operand::Other,
                        }
                    }
                    "jump" | "goto" => {
                        let [target] = fields(&mut map, ["target"])?;
                        Expr::Verdict { kind: key, target }
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                        Expr::Other
                    }
                };
                Ok(match skip_the_rest(&mut map)? {
                    true => expr,
                    // An object of more keys is no statement nft prints.
                    false => Expr::Other,
                })
            }
            otherwise!(Expr::Other; bool i64 u64 f64 str unit seq);
        }
        deserializer.deserialize_any(Exprs(PhantomData))
    }
}

/// Skips what is left of `map`; whether nothing was.
fn skip_the_rest<'de, A: MapAccess<'de>>(map: &mut A) -> Result<bool, A::Error> {
    let mut none = true;
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
        none = false;
    }
    Ok(none)
}

impl<'de: 'a, 'a> Deserialize<'de> for Operand<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Operands<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Operands<'a> {
            type Value = Operand<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an operand")
            }
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Operand<'a>, E> {
                Ok(Operand::Text(Str(Cow::Borrowed(text))))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Operand<'a>, E> {
                Ok(Operand::Text(Str(Cow::Owned(text.to_owned()))))
            }
            fn visit_u64<E: de::Error>(self, number: u64) -> Result<Operand<'a>, E> {
                Ok(Operand::Number(number))
            }
            fn visit_i64<E: de::Error>(self, number: i64) -> Result<Operand<'a>, E> {
                Ok(u64::try_from(number).map_or(Operand::Other, Operand::Number))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Operand<'a>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Operand::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Operand<'a>, A::Error> {
                let Some(key) = map.next_key::<Str<'de>>()? else {
                    return Ok(Operand::Other);
                };
                let operand = match &*key {
                    "meta" => match fields(&mut map, ["key"])? {
                        [Operand::Text(name)] => Operand::Meta(name),
                        _ => Operand::Other,
                    },
                    "ct" => match fields(&mut map, ["key", "dir"])? {
                        [Operand::Text(name), Operand::Other] => Operand::Ct(name),
                        [Operand::Text(name), Operand::Text(dir)] if &*dir == "original" => {
                            Operand::CtOriginal(name)
                        }
                        _ => Operand::Other,
                    },
                    "payload" => match fields(&mut map, ["protocol", "field"])? {
                        [Operand::Text(protocol), Operand::Text(field)] => {
                            Operand::Payload { protocol, field }
                        }
                        _ => Operand::Other,
                    },
                    "prefix" => match fields(&mut map, ["addr", "len"])? {
                        [Operand::Text(addr), Operand::Number(len)] => {
                            Operand::Prefix { addr, len }
                        }
                        _ => Operand::Other,
                    },
                    "range" => match map.next_value()? {
                        Operand::List(items) => Operand::Range(items),
                        _ => Operand::Other,
                    },
                    "&" => match map.next_value()? {
                        Operand::List(items) => Operand::And(items),
                        _ => Operand::Other,
                    },
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                        Operand::Other
                    }
                };
                Ok(match skip_the_rest(&mut map)? {
                    true => operand,
                    // An object of more keys is no form portlocker writes.
                    false => Operand::Other,
                })
            }
            otherwise!(Operand::Other; bool f64 unit);
        }
        deserializer.deserialize_any(Operands(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_borrow_from_the_text_unless_escaped() {
        let objects = objects(
            r#"{"nftables": [{"rule": {"family": "inet", "comment": "a \"b\"", "expr": []}}]}"#,
        )
        .unwrap();
        let Object::Rule(rule) = &objects[0] else {
            panic!("{objects:?}")
        };
        assert!(matches!(rule.family, Some(Str(Cow::Borrowed("inet")))));
        assert_eq!(rule.comment.as_deref(), Some("a \"b\""));
    }

    #[test]
    fn operands_of_forms_portlocker_does_not_write_read_as_other() {
        fn operand(json: &str) -> Operand<'_> {
            serde_json::from_str(json).unwrap()
        }
        assert_eq!(operand("-1"), Operand::Other);
        assert_eq!(operand("2.5"), Operand::Other);
        assert_eq!(operand("true"), Operand::Other);
        assert_eq!(operand("null"), Operand::Other);
        assert_eq!(operand("{}"), Operand::Other);
        assert_eq!(
            operand(r#"{"payload": {"base": "nh", "offset": 96, "len": 32}}"#),
            Operand::Other
        );
        assert_eq!(
            operand(r#"{"meta": {"key": "time"}, "ct": {"key": "state"}}"#),
            Operand::Other
        );
        assert_eq!(operand(r#"{"range": 5}"#), Operand::Other);
        assert_eq!(operand(r#"{"set": [1, 2]}"#), Operand::Other);
        assert_eq!(
            operand(r#"{"range": [1, 2]}"#),
            Operand::Range(vec![Operand::Number(1), Operand::Number(2)])
        );
    }

    #[test]
    fn what_is_not_a_list_of_objects_of_one_key_is_refused() {
        for text in [
            "",
            "not json",
            "{\"rules\": []}",
            "{\"nftables\": {}}",
            "{\"nftables\": [1]}",
            "{\"nftables\": [{}]}",
            "{\"nftables\": [{\"table\": {}, \"rule\": {}}]}",
            "{\"nftables\": [{\"rule\": {\"handle\": \"7\"}}]}",
        ] {
            assert!(objects(text).is_err(), "{text}");
        }
        assert!(objects("not json").unwrap_err().starts_with("not JSON: "));
        assert!(
            objects("{\"rules\": []}")
                .unwrap_err()
                .starts_with("not what nft lists: ")
        );
    }
}
