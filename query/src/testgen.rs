//! Property-test generators shared by the datum codecs' tests.

use crate::datum::Datum;
use proptest::prelude::*;

/// Any storable datum: every scalar kind (all finite doubles, exact integers, text,
/// binary) nested up to four levels in arrays and objects.
pub fn arb_datum() -> impl Strategy<Value = Datum> {
    let leaf = prop_oneof![
        Just(Datum::Null),
        any::<bool>().prop_map(Datum::Bool),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Datum::Num),
        any::<i64>().prop_map(|i| Datum::Num((i % (1 << 53)) as f64)),
        ".{0,8}".prop_map(Datum::str),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(|v| Datum::Binary(v.into())),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Datum::array),
            proptest::collection::btree_map(".{0,4}", inner, 0..5)
                .prop_map(|m| Datum::object(m.into_iter().collect())),
        ]
    })
}
